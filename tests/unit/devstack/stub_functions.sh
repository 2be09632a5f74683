# shellcheck shell=bash
# A stub of devstack's function library for tests/unit/devstack: each function
# the plugin calls records its arguments, one line per call, tab-separated, in
# $CALLS ("name<TAB>arg1<TAB>arg2..."), and does the least that devstack does
# for the plugin to go on. Nothing here needs root, systemd or a cloud.
#
# Inputs: CALLS (file), ENABLED_SERVICES, STUB_DISTRO (ubuntu|rhel),
# STUB_COMPUTE_HOSTS (what "openstack compute service list" prints).
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
get_python_exec_prefix() { echo /opt/stack/data/venv/bin; }
install_package() { record install_package "$@"; }
setup_develop() { record setup_develop "$@"; }
create_service_user() { record create_service_user "$@"; }
ipv6_unquote() { echo "$1" | tr -d '[]'; }
iniset() { record iniset "$@"; }
iniget() { record iniget "$@"; [[ $2/$3 == notifications/notification_format ]] && echo unversioned; }
get_transport_url() { echo "rabbit://stackrabbit:secretrabbit@$SERVICE_HOST:5672/$1"; }
get_notification_url() { echo "rabbit://stackrabbit:secretrabbit@$SERVICE_HOST:5672/$1"; }
iniset_rpc_backend() { iniset "$2" "${3:-DEFAULT}" transport_url "$(get_transport_url "$4")"; }
run_process() {
  local enabled=0
  is_service_enabled "$1" && enabled=1
  record run_process "$1" "$2" "$enabled"
  # devstack's _common_systemd_pitfalls
  [[ $2 =~ ^/ ]] || die $LINENO "The cmd=\"$2\" does not start with an absolute path"
}
stop_process() { record stop_process "$@"; }
wait_for_compute() { record wait_for_compute "$@"; }
openstack() { record openstack "$@"; local h; for h in $STUB_COMPUTE_HOSTS; do echo "$h"; done; }
sudo() { record sudo "$@"; [[ $1 == rabbitmqctl ]] || "$@"; }

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
