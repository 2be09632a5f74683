# shellcheck shell=bash
# A stub of devstack's function library for tests/unit/devstack: each function
# the plugin calls records its arguments, one line per call, tab-separated, in
# $CALLS ("name<TAB>arg1<TAB>arg2..."), and does the least that devstack does
# for the plugin to go on. Nothing here needs root, systemd or a cloud.
#
# Inputs: CALLS (file), ENABLED_SERVICES, STUB_DISTRO (ubuntu|rhel),
# STUB_COMPUTE_HOSTS (what "openstack compute service list" prints),
# STUB_PYTHON_PREFIX (devstack's venv bin: where instanceha's commands are),
# STUB_ZOOKEEPER_VERSION (the zookeeper package apt-cache offers),
# STUB_TRANSPORT_URL (what get_transport_url answers), STUB_RUN (services
# run_process really starts, in the background: their pids go to $CALLS.pids,
# their output to $CALLS.<service>.log; the others are only recorded).
# shellcheck disable=SC2034  # devstack's globals, read by the plugin

record() { local IFS=$'\t'; echo "$*" >> "$CALLS"; }

die() { shift; record die "$*"; echo "die: $*" >&2; exit 1; }
warn() { shift; record warn "$*"; }
echo_summary() { record echo_summary "$*"; }
trueorfalse() { local v=${!2:-$1}; case $v in [Tt]rue|1|yes) echo True ;; *) echo False ;; esac; }
define_plugin() { record define_plugin "$@"; }
enable_service() {
  local s
  for s in "$@"; do is_service_enabled "$s" || ENABLED_SERVICES+=",$s"; done
  record enable_service "$@"
}
is_service_enabled() {
  local s
  for s in "$@"; do [[ ,$ENABLED_SERVICES, == *,$s,* ]] && return 0; done
  [[ " $* " == *" nova "* && ,$ENABLED_SERVICES == *,n-* ]] && return 0
  return 1
}
is_ubuntu() { [[ $STUB_DISTRO == ubuntu ]]; }
get_python_exec_prefix() { echo "${STUB_PYTHON_PREFIX:-/opt/stack/data/venv/bin}"; }
install_package() { record install_package "$@"; }
setup_develop() { record setup_develop "$@"; }
create_service_user() { record create_service_user "$@"; }
ipv6_unquote() { echo "$1" | tr -d '[]'; }
# devstack's iniset writes the file (nova.conf, which is not ours, is only recorded)
iniset() {
  record iniset "$@"
  [[ $1 == "$NOVA_CONF" ]] && return 0
  python3 - "$@" <<'EOT'
import configparser, os, sys
path, section, option, value = sys.argv[1:5]
cp = configparser.RawConfigParser(interpolation=None, strict=False)
cp.optionxform = str
cp.read(path)
if section != "DEFAULT" and not cp.has_section(section):
    cp.add_section(section)
cp.set(section, option, value)
with open(path, "a+") as f:  # keeps the file's mode, as devstack's does
    f.seek(0)
    f.truncate()
    cp.write(f)
EOT
}
iniget() { record iniget "$@"; [[ $2/$3 == notifications/notification_format ]] && echo unversioned; }
get_transport_url() { echo "${STUB_TRANSPORT_URL:-rabbit://stackrabbit:secretrabbit@$SERVICE_HOST:5672/$1}"; }
get_notification_url() { echo "rabbit://stackrabbit:secretrabbit@$SERVICE_HOST:5672/$1"; }
iniset_rpc_backend() { iniset "$2" "${3:-DEFAULT}" transport_url "$(get_transport_url "$4")"; }
run_process() {
  local enabled=0
  is_service_enabled "$1" && enabled=1
  record run_process "$1" "$2" "$enabled"
  # devstack's _common_systemd_pitfalls
  [[ $2 =~ ^/ ]] || die $LINENO "The cmd=\"$2\" does not start with an absolute path"
  if [[ " $STUB_RUN " == *" $1 "* ]]; then
    # as systemd's ExecStart: the command line split on blanks
    # shellcheck disable=SC2086
    setsid $2 < /dev/null > "$CALLS.$1.log" 2>&1 &
    echo "$!" >> "$CALLS.pids"
  fi
}
stop_process() { record stop_process "$@"; }
wait_for_compute() { record wait_for_compute "$@"; }
openstack() { record openstack "$@"; local h; for h in $STUB_COMPUTE_HOSTS; do echo "$h"; done; }
sudo() { record sudo "$@"; [[ $1 == rabbitmqctl ]] || "$@"; }
apt-cache() {
  record apt-cache "$@"
  printf 'zookeeper:\n  Installed: (none)\n  Candidate: %s\n' "${STUB_ZOOKEEPER_VERSION:-3.8.0-11+deb12u2}"
}

# devstack's globals the plugin reads
DEST=${DEST:-/opt/stack}
DATA_DIR=${DATA_DIR:-$DEST/data}
STACK_USER=$(id -un)
SERVICE_HOST=${SERVICE_HOST:-192.0.2.10}
SERVICE_LOCAL_HOST=${SERVICE_LOCAL_HOST:-127.0.0.1}
KEYSTONE_SERVICE_URI=${KEYSTONE_SERVICE_URI:-http://$SERVICE_HOST/identity}
SERVICE_PASSWORD=${SERVICE_PASSWORD:-secretservice}
SERVICE_DOMAIN_NAME=Default
SERVICE_PROJECT_NAME=service
REGION_NAME=RegionOne
ENABLE_DEBUG_LOG_LEVEL=True
NOVA_CONF=/etc/nova/nova.conf
NOVA_READY_TIMEOUT=60
DISTRO=${STUB_DISTRO:-ubuntu}
