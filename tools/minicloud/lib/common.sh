# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are used by the scripts sourcing it
# Shared by up.sh, down.sh and lib/compute.sh (bash, sourced).
# Inputs:
#   RUN_DIR            first argument, else $MINICLOUD_RUN_DIR, else <repo>/.run/minicloud/run
#   MINICLOUD_PYTHON   python of the mini-cloud venv, else <repo>/.run/minicloud/venv/bin/python
#   MINICLOUD_PORT_BASE  ports BASE..BASE+9; unset: up.sh picks a free block and
#                      records it in RUN_DIR/ports.env (later scripts read it there)

MC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MC_TOP=$(cd "$MC_DIR/../.." && pwd -P)

die() { echo "minicloud: ERROR: $*" >&2; exit 1; }

# mc_set_run_dir DIR [create]: absolute RUN_DIR plus the derived paths
mc_set_run_dir() {
  local d=${1:-${MINICLOUD_RUN_DIR:-$MC_TOP/.run/minicloud/run}}
  if [ "${2:-}" = create ]; then mkdir -p "$d"; fi
  [ -d "$d" ] || return 1
  RUN_DIR=$(cd "$d" && pwd -P)
  case "$RUN_DIR$MC_DIR" in
    *[[:space:]]*) die "whitespace in RUN_DIR or in the repository path is not supported" ;;
  esac
  ETC=$RUN_DIR/etc
  LOG=$RUN_DIR/log
  PIDS=$RUN_DIR/pids
}

# mc_set_python: PY (absolute, symlinks kept so a venv stays a venv) and BIN
mc_set_python() {
  local p=${MINICLOUD_PYTHON:-$MC_TOP/.run/minicloud/venv/bin/python}
  case $p in
    */*) [ -x "$p" ] || die "no python at $p: run tools/minicloud/install.sh (or set MINICLOUD_PYTHON)"
         PY=$(cd "$(dirname "$p")" && pwd)/$(basename "$p") ;;
    *)   PY=$(command -v "$p") || die "python '$p' not found" ;;
  esac
  BIN=$(dirname "$PY")
}

# mc_set_ports BASE: the 10 ports of one stack, BASE..BASE+9
mc_set_ports() {
  local b=$1
  if ! [[ $b =~ ^[0-9]+$ ]] || [ "$b" -lt 1024 ] || [ "$b" -gt 65500 ]; then
    die "port base must be a number in 1024..65500 (got '$b')"
  fi
  PORT_BASE=$b
  P_MYSQL=$b P_AMQP=$((b + 1)) P_ERL_DIST=$((b + 2)) P_EPMD=$((b + 3))
  P_KEYSTONE=$((b + 4)) P_PLACEMENT=$((b + 5)) P_GLANCE=$((b + 6))
  P_NEUTRON=$((b + 7)) P_NOVA=$((b + 8)) P_CINDER=$((b + 9))
}

# /proc/PID/stat fields after the last ')' (comm may contain spaces/parens):
# $1 = state, $20 = start time (clock ticks since boot)
_stat() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; echo "${s##*) }"; }
# alive = exists and is not a zombie (some PID 1s reap orphans only lazily)
alive() { local s; s=$(_stat "$1") || return 1; [ "${s%% *}" != Z ]; }
# shellcheck disable=SC2086  # split the fields on purpose
starttime() { local s; s=$(_stat "$1") || return 1; set -- $s; echo "${20}"; }

# pid files hold "PID STARTTIME": a recycled PID is never mistaken for ours
write_pid() {  # write_pid NAME PID
  echo "$2 $(starttime "$2" || echo 0)" > "$PIDS/$1.pid"
}
# recorded_pid NAME: print the PID if that very process is still alive
recorded_pid() {
  local f=$PIDS/$1.pid pid st
  [ -f "$f" ] || return 1
  read -r pid st < "$f" || true
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [ -n "${st:-}" ] && [ "$st" != 0 ] && [ "$(starttime "$pid")" != "$st" ]; then
    return 1
  fi
  echo "$pid"
}

# start NAME CMD... : run in the background, log to $LOG/NAME.log (appended),
# pid to $PIDS/NAME.pid
start() {
  local name=$1; shift
  nohup "$@" >> "$LOG/$name.log" 2>&1 < /dev/null &
  write_pid "$name" $!
}
