#!/bin/bash
# Installs the mini-cloud's own Python venv: nova 34, keystone, placement,
# glance and neutron from PyPI, every package pinned by constraints.txt.
# The Debian packages it needs (mariadb-server, rabbitmq-server) come from
# tools/install.sh.
#
#   tools/minicloud/install.sh [VENV_DIR]     # default: .run/minicloud/venv
#
# Env: MINICLOUD_BASE_PYTHON=python3 (>= 3.11) interpreter the venv is made from.
# Idempotent: a venv whose packages already match is left as it is (~2 s).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd -P)
TOP=$(cd "$HERE/../.." && pwd -P)
VENV=${1:-${MINICLOUD_VENV:-$TOP/.run/minicloud/venv}}
BASE_PY=${MINICLOUD_BASE_PYTHON:-python3}
T0=$(date +%s)
say() { echo "[minicloud install $(( $(date +%s) - T0 ))s] $*"; }

for b in mariadbd mariadb-install-db epmd; do
  command -v "$b" > /dev/null || [ -x "/usr/sbin/$b" ] ||
    { echo "$b missing: run tools/install.sh first (Debian packages)" >&2; exit 1; }
done
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] ||
  { echo "rabbitmq-server missing: run tools/install.sh first" >&2; exit 1; }

"$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "$BASE_PY is older than 3.11 (nova 34 needs >= 3.11)" >&2; exit 1; }
STAMP=$VENV/.instanceha-minicloud-stamp
WANT=$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  say "venv $VENV already up to date"
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV with $("$BASE_PY" -V 2>&1)"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv "$VENV"
fi
say "pip install (pinned by constraints.txt; ~2 min on an empty pip cache)"
"$VENV/bin/python" -m pip install -q -c "$HERE/constraints.txt" -r "$HERE/requirements.txt"
"$VENV/bin/python" -m pip check
echo "$WANT" > "$STAMP"
say "done: $("$VENV/bin/python" -m pip list 2> /dev/null | tail -n +3 | wc -l) packages in $VENV"
