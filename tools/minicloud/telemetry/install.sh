#!/bin/bash
# Installs the mini-cloud's telemetry venv (Ceilometer 27, Aodh 23), pinned by
# constraints.txt next to this script. Opt-in: only what needs tenant alarms
# (the tests in tests/functional that take the `telemetry` fixture, the
# notification benchmark's --aodh consumer) calls it; up.sh never does.
#
#   tools/minicloud/telemetry/install.sh [VENV_DIR]  # default: .run/minicloud/telemetry-venv
#
# Env: MINICLOUD_BASE_PYTHON=python3 (>= 3.11). Idempotent: a venv whose
# packages already match is left as it is (~0 s); a new one takes ~50-100 s.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd -P)
TOP=$(cd "$HERE/../../.." && pwd -P)
VENV=${1:-${MINICLOUD_TELEMETRY_VENV:-$TOP/.run/minicloud/telemetry-venv}}
BASE_PY=${MINICLOUD_BASE_PYTHON:-python3}
T0=$(date +%s)
say() { echo "[telemetry install $(( $(date +%s) - T0 ))s] $*"; }

"$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "$BASE_PY is older than 3.11 (ceilometer 27 and aodh 23 need >= 3.11)" >&2; exit 1; }
STAMP=$VENV/.instanceha-telemetry-stamp
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
say "pip install (pinned by constraints.txt)"
"$VENV/bin/python" -m pip install -q -c "$HERE/constraints.txt" -r "$HERE/requirements.txt"
"$VENV/bin/python" -m pip check
echo "$WANT" > "$STAMP"
say "done: $("$VENV/bin/python" -m pip list 2> /dev/null | tail -n +3 | wc -l) packages in $VENV"
