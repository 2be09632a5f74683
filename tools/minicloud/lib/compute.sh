#!/bin/bash
# Start, SIGKILL or stop one fake-driver nova-compute of a running mini-cloud.
#
#   lib/compute.sh RUN_DIR N start   # (re)start nova-computeN: same config, same
#                                    # state_path, so the same node identity
#   lib/compute.sh RUN_DIR N kill    # SIGKILL (a host dying without warning)
#   lib/compute.sh RUN_DIR N stop    # SIGTERM, SIGKILL after 10 s
# Prints the PID it started or signalled.
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
[ $# = 3 ] || die "usage: $0 RUN_DIR N start|kill|stop"
mc_set_run_dir "$1" || die "no RUN_DIR $1"
n=$2 what=$3
[[ $n =~ ^[0-9]+$ ]] || die "N must be a number"
[ -f "$ETC/nova/nova-compute$n.conf" ] || die "no compute $n in $RUN_DIR"
# don't hand the caller's open sockets or pipes on to nova-compute
for fd in "/proc/$$/fd/"*; do
  fd=${fd##*/}; [ "$fd" -gt 2 ] 2> /dev/null && eval "exec $fd>&-"
done
case $what in
  start)
    if pid=$(recorded_pid "nova-compute$n"); then echo "$pid"; exit 0; fi
    # shellcheck disable=SC1091  # written by up.sh
    . "$RUN_DIR/minicloud.env"
    mc_set_python
    export PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore
    start "nova-compute$n" "$PY" "$MC_DIR/lib/nova-compute-minicloud" \
      --config-file "$ETC/nova/nova.conf" --config-file "$ETC/nova/nova-compute$n.conf"
    recorded_pid "nova-compute$n" ;;
  kill)
    pid=$(recorded_pid "nova-compute$n") || exit 0
    kill -KILL "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    echo "$pid" ;;
  stop)
    pid=$(recorded_pid "nova-compute$n") || exit 0
    kill -TERM "$pid"
    for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill -KILL "$pid"
    echo "$pid" ;;
  *) die "usage: $0 RUN_DIR N start|kill|stop" ;;
esac
