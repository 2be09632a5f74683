#!/bin/bash
# The main job: install what is missing, then run the failover demo.
#   tools/demo.sh [--computes N] [--fault kill|stop|hang] [--kill-leader] [--keep] [--prometheus]
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd -P)
"$TOP/tools/install.sh"
VENV=${INSTANCEHA_VENV:-$TOP/.venv}
exec "$VENV/bin/python" "$TOP/tools/demo.py" "$@"
