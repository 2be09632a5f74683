#!/bin/bash
# The test command: installs what is missing, then runs every check and test.
#
#   tools/test.sh [pytest args...]
#
# Order: static checks (ruff, import-linter contracts, mypy, shellcheck), unit tests,
# then functional tests against real services that the project's harness
# starts on loopback (ZooKeeper, BMC emulators, RabbitMQ, the mini-cloud).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$TOP"
"$TOP/tools/install.sh"
VENV=${INSTANCEHA_VENV:-$TOP/.venv}
export PATH="$VENV/bin:$PATH"
T0=$(date +%s)
say() { echo "[test $(( $(date +%s) - T0 ))s] $*"; }

say "ruff"
ruff check instanceha tests tools benchmarks examples
say "import-linter contracts"
lint-imports
say "mypy (the engine strict, the rest checked)"
mypy
say "shellcheck"
mapfile -t SCRIPTS < <(find tools devstack tests -name '*.sh' 2> /dev/null | sort -u)
shellcheck -x .ci/run "${SCRIPTS[@]}" tests/unit/devstack/bin/*
shellcheck -s bash devstack/settings
say "pytest"
# the daemons' logs of every test stay in this checkout's own tmp dir (pytest
# keeps only the last three runs of /tmp/pytest-of-$USER, shared by every run)
python -m pytest --fault-report "$TOP/.run/faults.json" --basetemp "$TOP/.run/pytest-tmp" "$@"
