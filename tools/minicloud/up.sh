#!/bin/bash
# Bring up instanceha's mini-cloud on loopback: MariaDB, RabbitMQ, keystone,
# placement, glance, neutron (API only), cinder (api, scheduler, one volume
# service with cinder's fake logging driver), nova-api, nova-conductor,
# nova-scheduler and N nova-compute processes (computeN) with nova's fake virt
# driver and a stable node identity (a compute can be killed and restarted).
#
#   tools/minicloud/up.sh [RUN_DIR]      # default: <repo>/.run/minicloud/run
#   tools/minicloud/down.sh [RUN_DIR] [--wipe]
#
# Env:
#   MINICLOUD_PYTHON=PATH    python of tools/minicloud/install.sh's venv
#                            (default <repo>/.run/minicloud/venv/bin/python)
#   MINICLOUD_PORT_BASE=N    ports N..N+9; default: the first free block from
#                            21000 up (system MariaDB/RabbitMQ are never touched)
#   MINICLOUD_COMPUTES=3     number of nova-compute processes (1..9)
# Writes RUN_DIR/endpoints.json (URLs, credentials, transport_url, compute
# hosts, pid/log dirs), RUN_DIR/clouds.yaml (cloud "minicloud") and
# RUN_DIR/minicloud.env; everything it starts is recorded in RUN_DIR/pids.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

mc_set_run_dir "${1:-}" create
mc_set_python
COMPUTES=${MINICLOUD_COMPUTES:-3}
[[ $COMPUTES =~ ^[1-9]$ ]] || die "MINICLOUD_COMPUTES must be 1..9"
mkdir -p "$RUN_DIR/pids"
for f in "$PIDS"/*.pid; do
  [ -f "$f" ] || continue
  n=$(basename "$f" .pid)
  ! recorded_pid "$n" > /dev/null || die "$n already running in $RUN_DIR: run down.sh first"
done
SOCK=$RUN_DIR/mysql/mysqld.sock
[ ${#SOCK} -le 100 ] || die "RUN_DIR path too long for the MariaDB unix socket ($SOCK)"
for b in gunicorn keystone-manage placement-manage glance-manage neutron-db-manage \
         nova-manage nova-conductor nova-scheduler; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: run tools/minicloud/install.sh"
done

T_START=$(date +%s.%N)
ts() { awk -v a="$(date +%s.%N)" -v b="$T_START" -v m="$*" 'BEGIN { printf "[minicloud %5.1fs] %s\n", a - b, m }'; }
MCTOOL() { "$PY" "$MC_DIR/lib/mctool.py" "$@"; }

# a fresh start: wipe the state of a previous run (not a venv kept in RUN_DIR)
find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name venv -exec rm -rf {} +
mkdir -p "$LOG" "$PIDS" "$ETC"

mc_set_ports "${MINICLOUD_PORT_BASE:-$(MCTOOL find-port-base 10)}"
out=$(MCTOOL ports-free $(seq "$PORT_BASE" $((PORT_BASE + 9)))) ||
  die "127.0.0.1 ports $PORT_BASE..$((PORT_BASE + 9)) not free ($out); set another MINICLOUD_PORT_BASE"
export PATH=$BIN:$PATH PYTHONWARNINGS=ignore PYTHONDONTWRITEBYTECODE=1
export OS_CLIENT_CONFIG_FILE=$RUN_DIR/clouds.yaml OS_CLOUD=minicloud

# ---------------------------------------------------------------- configs
MC_USER=$(id -un)
export MC_USER MC_RUN_DIR=$RUN_DIR MC_MINICLOUD_DIR=$MC_DIR MC_ETC=$ETC MC_PYTHON=$PY \
       MC_COMPUTES=$COMPUTES MC_PORT_BASE=$PORT_BASE
export MC_PORT_MYSQL=$P_MYSQL MC_PORT_AMQP=$P_AMQP MC_PORT_ERL_DIST=$P_ERL_DIST \
       MC_PORT_EPMD=$P_EPMD MC_PORT_KEYSTONE=$P_KEYSTONE MC_PORT_PLACEMENT=$P_PLACEMENT \
       MC_PORT_GLANCE=$P_GLANCE MC_PORT_NEUTRON=$P_NEUTRON MC_PORT_NOVA=$P_NOVA \
       MC_PORT_CINDER=$P_CINDER
MCTOOL render-tree "$MC_DIR/templates" "$ETC"
for n in $(seq 1 "$COMPUTES"); do
  MCTOOL render-file "$MC_DIR/templates/nova/nova-compute.conf.tmpl" "$ETC/nova/nova-compute$n.conf" N="$n" \
    HOST_IP="$(MCTOOL host-ip "$PORT_BASE" "$n")"
done
MCTOOL render-file "$MC_DIR/templates/clouds.yaml.tmpl" "$RUN_DIR/clouds.yaml"
MCTOOL write-endpoints "$RUN_DIR/endpoints.json"
{
  printf 'export MINICLOUD_RUN_DIR=%q\n' "$RUN_DIR"
  printf 'export MINICLOUD_PYTHON=%q\n' "$PY"
  printf 'export MINICLOUD_PORT_BASE=%q\n' "$PORT_BASE"
  printf 'export OS_CLIENT_CONFIG_FILE=%q OS_CLOUD=minicloud\n' "$RUN_DIR/clouds.yaml"
} > "$RUN_DIR/minicloud.env"
ts "configs rendered in $RUN_DIR (ports $PORT_BASE..$((PORT_BASE + 9)), $COMPUTES computes)"

# ---------------------------------------------------------------- helpers
# MINICLOUD_WAIT_FACTOR (default 1) multiplies every wait below: a machine that
# runs several clouds or test suites at once starts each service slower
wait_cmd() {  # wait_cmd TIMEOUT DESCRIPTION CMD...
  local t=$(( $1 * ${MINICLOUD_WAIT_FACTOR:-1} )) what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" > /dev/null 2>&1; do
    [ "$(date +%s)" -lt $end ] || die "timeout waiting for $what (logs: $LOG)"
    sleep 0.2
  done
  ts "$what ready"
}
# always --max-time: a gunicorn master whose workers crash-loop accepts
# connections and never answers
http_ok() { curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" | grep -qE '^(2|3)'; }
port_open() { (echo > "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
gunicorn_app() {  # name port module config-env
  local name=$1 port=$2 mod=$3; shift 3
  # --no-control-socket: gunicorn >= 27 shares ~/.gunicorn/gunicorn.ctl otherwise.
  # --keep-alive 120: with the default 2 s, a client reusing a pooled connection
  # just as gunicorn closes it gets "Connection reset by peer" (nova-scheduler
  # then reports "no allocation candidates" and the boot ends in ERROR)
  start "$name" env "$@" "$BIN/gunicorn" --no-control-socket --chdir "$MC_DIR/wsgi" \
      -w 1 --threads 8 --keep-alive 120 -b "127.0.0.1:$port" --timeout 120 "$mod:application"
}
URL_KEYSTONE=http://127.0.0.1:$P_KEYSTONE/v3

# ---------------------------------------------------------------- MariaDB
mkdir -p "$RUN_DIR/mysql/data"
MYCNF=$ETC/my.cnf
mariadb-install-db --defaults-file="$MYCNF" --auth-root-authentication-method=normal \
    --skip-test-db > "$LOG/mariadb-install.log" 2>&1 ||
  die "mariadb-install-db failed, see $LOG/mariadb-install.log"
start mariadb /usr/sbin/mariadbd --defaults-file="$MYCNF"

# ---------------------------------------------------------------- RabbitMQ
# its own epmd (own port) and node: a system RabbitMQ is left alone
mkdir -p "$RUN_DIR/rabbitmq/mnesia" "$LOG/rabbitmq"
echo '[].' > "$RUN_DIR/rabbitmq/enabled_plugins"
(
  # shellcheck disable=SC1091  # rendered from templates/rabbitmq/rabbitmq-env.sh.in
  . "$ETC/rabbitmq/rabbitmq-env.sh"
  start epmd /usr/bin/epmd -address 127.0.0.1 -port "$P_EPMD"
  sleep 0.3
  # not /usr/sbin/rabbitmq-server: it switches to the rabbitmq user and the
  # system data dir
  start rabbitmq-wrapper /usr/lib/rabbitmq/bin/rabbitmq-server
)

wait_cmd 60 mariadb mariadb-admin --defaults-file="$MYCNF" -uroot ping
SQL=(mariadb --defaults-file="$MYCNF" -uroot)
"${SQL[@]}" < "$MC_DIR/lib/users.sql"

# ---------------------------------------------------------------- schemas
# Migrating 7 databases from scratch takes 30-50 s. The result (schemas,
# keystone's bootstrap and catalog, nova's cell mappings: all taken before any
# service wrote to them) is cached per version of the pinned packages, the
# templates and this script, with the ports moved on loading.
# MINICLOUD_NO_CACHE=1 migrates from scratch; MINICLOUD_CACHE_DIR moves it.
mkdir -p "$RUN_DIR/keystone" "$RUN_DIR"/glance/{images,staging,tasks,lock} "$RUN_DIR/cinder/lock" \
         "$RUN_DIR/neutron/lock" "$RUN_DIR/nova/lock"
for n in $(seq 1 "$COMPUTES"); do mkdir -p "$RUN_DIR/nova/compute$n"; done
KC=(--config-file "$ETC/keystone/keystone.conf")
NC=(--config-file "$ETC/nova/nova.conf")
KEYS=(--keystone-user "$(id -un)" --keystone-group "$(id -gn)")
CACHE_DIR=${MINICLOUD_CACHE_DIR:-$MC_TOP/.run/minicloud/cache}
CACHE_KEY=$( (cat "$MC_DIR/constraints.txt" "$MC_DIR/requirements.txt" "$0" \
               "$MC_DIR/lib/databases.sql" "$MC_DIR/lib/bootstrap.py"
              find "$MC_DIR/templates" -type f | sort | xargs cat) | sha256sum | cut -c1-16)
CACHE=$CACHE_DIR/schema-$CACHE_KEY
dump() { mariadb-dump --defaults-file="$MYCNF" -uroot --skip-comments --single-transaction \
           --databases "$@" > "$CACHE_TMP/$1.sql" || die "mariadb-dump $* failed"; }
start_api() {  # start_api NAME: the gunicorn of one API service
  case $1 in
    keystone)  gunicorn_app keystone "$P_KEYSTONE" keystone_app OS_KEYSTONE_CONFIG_DIR="$ETC/keystone" ;;
    placement) gunicorn_app placement "$P_PLACEMENT" placement_app OS_PLACEMENT_CONFIG_DIR="$ETC/placement" ;;
    glance)    gunicorn_app glance "$P_GLANCE" glance_app OS_GLANCE_CONFIG_DIR="$ETC/glance" ;;
    neutron)   gunicorn_app neutron "$P_NEUTRON" neutron_app OS_NEUTRON_CONFIG_DIR="$ETC/neutron" ;;
    cinder)    gunicorn_app cinder "$P_CINDER" cinder_app OS_CINDER_CONFIG_DIR="$ETC/cinder" ;;
  esac
}

if [ "${MINICLOUD_NO_CACHE:-0}" != 1 ] && [ -f "$CACHE/port_base" ]; then
  ( keystone-manage "${KC[@]}" fernet_setup "${KEYS[@]}" &&
    keystone-manage "${KC[@]}" credential_setup "${KEYS[@]}" ) > "$LOG/keystone-manage.log" 2>&1 & P1=$!
  MCTOOL rewrite-ports "$(cat "$CACHE/port_base")" "$PORT_BASE" 10 < "$CACHE/all.sql" |
    "${SQL[@]}" || die "loading the cached schemas from $CACHE failed (remove it to rebuild)"
  wait $P1 || die "keystone-manage failed, see $LOG/keystone-manage.log"
  for api in keystone placement glance neutron cinder; do start_api $api; done
  ts "schemas and catalog loaded from the cache ($CACHE)"
  wait_cmd 90 rabbitmq port_open "$P_AMQP"
  wait_cmd 60 keystone http_ok "$URL_KEYSTONE"
else
  "${SQL[@]}" < "$MC_DIR/lib/databases.sql"
  mkdir -p "$CACHE_DIR"
  CACHE_TMP=$(mktemp -d "$CACHE_DIR/tmp.XXXXXX")
  ( keystone-manage "${KC[@]}" db_sync &&
    keystone-manage "${KC[@]}" fernet_setup "${KEYS[@]}" &&
    keystone-manage "${KC[@]}" credential_setup "${KEYS[@]}" &&
    keystone-manage "${KC[@]}" bootstrap --bootstrap-password admin \
      --bootstrap-admin-url "$URL_KEYSTONE/" --bootstrap-internal-url "$URL_KEYSTONE/" \
      --bootstrap-public-url "$URL_KEYSTONE/" --bootstrap-region-id RegionOne
  ) > "$LOG/keystone-manage.log" 2>&1 & P1=$!
  placement-manage --config-file "$ETC/placement/placement.conf" db sync \
      > "$LOG/placement-manage.log" 2>&1 & P2=$!
  glance-manage --config-file "$ETC/glance/glance-api.conf" db_sync \
      > "$LOG/glance-manage.log" 2>&1 & P3=$!
  neutron-db-manage --config-file "$ETC/neutron/neutron.conf" \
      --config-file "$ETC/neutron/plugins/ml2/ml2_conf.ini" upgrade heads \
      > "$LOG/neutron-db-manage.log" 2>&1 & P4=$!
  ( nova-manage "${NC[@]}" api_db sync &&
    nova-manage "${NC[@]}" cell_v2 map_cell0 --database_connection \
      "mysql+pymysql://openstack:secret@127.0.0.1:$P_MYSQL/nova_cell0?charset=utf8" &&
    nova-manage "${NC[@]}" cell_v2 create_cell --name cell1 &&
    nova-manage "${NC[@]}" db sync ) > "$LOG/nova-manage.log" 2>&1 & P5=$!
  cinder-manage --config-file "$ETC/cinder/cinder.conf" db sync \
      > "$LOG/cinder-manage.log" 2>&1 & P6=$!
  wait $P1 || die "keystone-manage failed, see $LOG/keystone-manage.log"
  ts "keystone db + bootstrap done"
  start_api keystone
  # each database is dumped for the cache before its service first writes to it
  wait $P2 || die "placement db sync failed, see $LOG/placement-manage.log"
  dump placement; start_api placement
  wait $P3 || die "glance db sync failed, see $LOG/glance-manage.log"
  dump glance; start_api glance
  wait $P4 || die "neutron db sync failed, see $LOG/neutron-db-manage.log"
  dump neutron; start_api neutron
  wait $P5 || die "nova-manage failed, see $LOG/nova-manage.log"
  dump nova_api nova_cell0 nova
  wait $P6 || die "cinder db sync failed, see $LOG/cinder-manage.log"
  dump cinder; start_api cinder
  ts "all db migrations done"

  wait_cmd 90 rabbitmq port_open "$P_AMQP"
  wait_cmd 60 keystone http_ok "$URL_KEYSTONE"
  "$PY" "$MC_DIR/lib/bootstrap.py" "$RUN_DIR" catalog > "$LOG/bootstrap-catalog.log" 2>&1 ||
    die "catalog registration failed, see $LOG/bootstrap-catalog.log"
  ts "keystone catalog registered"
  dump keystone
  cat "$CACHE_TMP"/{keystone,placement,glance,neutron,nova_api,cinder}.sql > "$CACHE_TMP/all.sql"
  rm -f "$CACHE_TMP"/{keystone,placement,glance,neutron,nova_api,cinder}.sql
  echo "$PORT_BASE" > "$CACHE_TMP/port_base"
  # atomic: a parallel run that cached first wins, this copy is dropped
  mv -T "$CACHE_TMP" "$CACHE" 2> /dev/null || rm -rf "$CACHE_TMP"
fi
# record beam.smp itself (the wrapper is a sh that does not exec)
BEAM=$(pgrep -P "$(recorded_pid rabbitmq-wrapper)" -f beam | head -n1) || true
[ -z "$BEAM" ] || write_pid rabbitmq "$BEAM"

# nova services only once the catalog exists: nova-scheduler builds its
# placement client once at start (else every boot ends in NoValidHost)
gunicorn_app nova-api "$P_NOVA" nova_api_app OS_NOVA_CONFIG_DIR="$ETC/nova"
start nova-conductor "$BIN/nova-conductor" "${NC[@]}"
start nova-scheduler "$BIN/nova-scheduler" "${NC[@]}"
start cinder-scheduler "$BIN/cinder-scheduler" --config-file "$ETC/cinder/cinder.conf"
start cinder-volume "$BIN/cinder-volume" --config-file "$ETC/cinder/cinder.conf"
for n in $(seq 1 "$COMPUTES"); do
  "$MC_DIR/lib/compute.sh" "$RUN_DIR" "$n" start > /dev/null
done
ts "nova-api, nova-conductor, nova-scheduler, $COMPUTES nova-compute started"

wait_cmd 60 glance http_ok "http://127.0.0.1:$P_GLANCE/"
wait_cmd 60 nova-api http_ok "http://127.0.0.1:$P_NOVA/"
"$PY" "$MC_DIR/lib/bootstrap.py" "$RUN_DIR" image > "$LOG/bootstrap-image.log" 2>&1 ||
  die "image/flavor creation failed, see $LOG/bootstrap-image.log"
ts "image 'tiny' and flavor 'm1.tiny' ready"
wait_cmd 60 neutron http_ok "http://127.0.0.1:$P_NEUTRON/"
wait_cmd 60 placement http_ok "http://127.0.0.1:$P_PLACEMENT/"
wait_cmd 60 cinder http_ok "http://127.0.0.1:$P_CINDER/"
# what a failed wait leaves in the error: CI keeps the output, not RUN_DIR
diagnose() {
  local svc pid f
  echo "minicloud: diagnosis at $(date -u +%T) UTC"
  tail -n 2 "$LOG/bootstrap-computes.log" | sed 's/^/  wait: /'
  df -h "$RUN_DIR" | tail -n 1 | sed 's/^/  disk: /'
  grep -h -E -i 'resource limit alarm|alarm set' "$LOG"/rabbitmq*.log 2> /dev/null | tail -n 3 | cut -c1-200 | sed 's/^/  rabbitmq: /'
  for svc in rabbitmq-wrapper nova-conductor nova-scheduler cinder-volume \
             $(seq -f 'nova-compute%g' 1 "$COMPUTES"); do
    if pid=$(recorded_pid "$svc"); then echo "  $svc: running (pid $pid)"
    else echo "  $svc: NOT running"; fi
    f=$LOG/$svc.log
    [ -f "$f" ] || continue
    grep -E ' (ERROR|WARNING|CRITICAL) ' "$f" | grep -v -E 'No DB access allowed|neutronclient is deprecated|minimum service version|no_fork=True|concurrent builds' |
      tail -n 3 | sed -E 's/\[(None )?req-[^]]*\] |\[-\] //' | cut -c1-240 | sed 's/^/    /'
  done
}
"$PY" "$MC_DIR/lib/bootstrap.py" "$RUN_DIR" wait-computes > "$LOG/bootstrap-computes.log" 2>&1 ||
  { diagnose >&2; die "computes did not come up, see $LOG/nova-compute*.log"; }
ts "$COMPUTES nova-compute services and cinder-volume up"
nova-manage "${NC[@]}" cell_v2 discover_hosts > "$LOG/discover_hosts.log" 2>&1 ||
  die "discover_hosts failed, see $LOG/discover_hosts.log"
ts "hosts discovered: mini-cloud ready"
echo "minicloud up [$RUN_DIR]: keystone=$URL_KEYSTONE nova=http://127.0.0.1:$P_NOVA/v2.1" \
     "amqp=127.0.0.1:$P_AMQP mysql=127.0.0.1:$P_MYSQL computes=$(seq -s, -f 'compute%g' 1 "$COMPUTES")" \
     "endpoints=$RUN_DIR/endpoints.json clouds.yaml=$RUN_DIR/clouds.yaml (cloud minicloud)"
