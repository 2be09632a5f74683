#!/bin/bash
# Stop everything up.sh (and lib/compute.sh) started, using only the PIDs
# recorded in RUN_DIR/pids/*.pid ("PID STARTTIME": a recycled PID is left
# alone): SIGTERM, up to 10 s, then SIGKILL. Direct children of a recorded
# process (gunicorn / oslo.service workers) are signalled too. epmd goes
# last: if it dies before beam.smp, the Erlang VM respawns one.
#
#   tools/minicloud/down.sh [RUN_DIR] [--wipe]    # --wipe: delete RUN_DIR's state
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

WIPE=0 RUN_ARG=
for a in "$@"; do
  case $a in
    --wipe) WIPE=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) RUN_ARG=$a ;;
  esac
done
if ! mc_set_run_dir "$RUN_ARG"; then
  echo "minicloud down: no RUN_DIR at '${RUN_ARG:-${MINICLOUD_RUN_DIR:-$MC_TOP/.run/minicloud/run}}', nothing to stop"
  exit 0
fi

STOPPED=0 KILLED=0
stop_names() {  # stop the components whose pid files are named "$@"
  declare -A PIDS_OF
  local name pid c
  for name in "$@"; do
    if pid=$(recorded_pid "$name"); then
      PIDS_OF[$name]=$pid
      for c in $(pgrep -P "$pid"); do PIDS_OF[$name.child$c]=$c; done
      kill -TERM "$pid" 2> /dev/null
    fi
    rm -f "$PIDS/$name.pid"
  done
  for _ in $(seq 1 50); do
    local any=0
    for name in "${!PIDS_OF[@]}"; do alive "${PIDS_OF[$name]}" && any=1; done
    [ $any = 0 ] && break
    sleep 0.2
  done
  for name in "${!PIDS_OF[@]}"; do
    pid=${PIDS_OF[$name]}
    if alive "$pid"; then
      kill -KILL "$pid" 2> /dev/null; KILLED=$((KILLED + 1))
    else
      STOPPED=$((STOPPED + 1))
    fi
  done
}

names=()
for f in "$PIDS"/*.pid; do
  [ -f "$f" ] || continue
  n=$(basename "$f" .pid); [ "$n" = epmd ] || names+=("$n")
done
[ ${#names[@]} = 0 ] || stop_names "${names[@]}"
[ -f "$PIDS/epmd.pid" ] && stop_names epmd

if [ $WIPE = 1 ]; then
  find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name venv -exec rm -rf {} +
  rmdir "$RUN_DIR" 2> /dev/null || true
  W=" and wiped $RUN_DIR"
fi
echo "minicloud down [$RUN_DIR]: $STOPPED processes stopped, $KILLED killed with SIGKILL${W:-}"
