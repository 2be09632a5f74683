#!/bin/bash
# Opt-in telemetry for a running mini-cloud: Ceilometer's notification agent
# (instanceha's shipped event definitions and pipeline) and Aodh (API,
# listener, notifier), on the mini-cloud's MariaDB, RabbitMQ and Keystone.
# tools/minicloud/up.sh never starts them; the tests and the benchmark that
# need tenant alarms do (tools/harness/telemetry.py).
#
#   tools/minicloud/telemetry/install.sh          # the venv, once (~50-100 s)
#   tools/minicloud/telemetry/up.sh [RUN_DIR]     # ~15-30 s on a running mini-cloud
#   tools/minicloud/down.sh [RUN_DIR]             # stops these too (same pid dir)
#
# Env: MINICLOUD_TELEMETRY_PYTHON=PATH  python of install.sh's venv
#      (default <repo>/.run/minicloud/telemetry-venv/bin/python)
# Writes RUN_DIR/telemetry.json (Aodh's URL, the events file, log names).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
HERE=$MC_DIR/telemetry

mc_set_run_dir "${1:-}" || die "no mini-cloud RUN_DIR at '${1:-}': run tools/minicloud/up.sh first"
if [ ! -f "$RUN_DIR/endpoints.json" ] || ! recorded_pid mariadb > /dev/null ||
   ! recorded_pid rabbitmq-wrapper > /dev/null; then
  die "the mini-cloud in $RUN_DIR is not running: run tools/minicloud/up.sh first"
fi
TPY=${MINICLOUD_TELEMETRY_PYTHON:-$MC_TOP/.run/minicloud/telemetry-venv/bin/python}
[ -x "$TPY" ] || die "no telemetry python at $TPY: run tools/minicloud/telemetry/install.sh"
TBIN=$(dirname "$TPY")
for n in aodh-api aodh-listener aodh-notifier ceilometer-notification; do
  ! recorded_pid "$n" > /dev/null || die "$n already running in $RUN_DIR: run down.sh first"
done

T_START=$(date +%s.%N)
ts() { awk -v a="$(date +%s.%N)" -v b="$T_START" -v m="$*" 'BEGIN { printf "[telemetry %5.1fs] %s\n", a - b, m }'; }
port() { "$TPY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ports"][sys.argv[2]])' \
           "$RUN_DIR/endpoints.json" "$1"; }
P_AODH=$("$TPY" "$MC_DIR/lib/mctool.py" find-port-base 1 30000)
R=(PORT_MYSQL="$(port mysql)" PORT_AMQP="$(port amqp)" PORT_KEYSTONE="$(port keystone)"
   PORT_AODH="$P_AODH" RUN_DIR="$RUN_DIR" ETC="$ETC" REPO="$MC_TOP")
rm -rf "$RUN_DIR/telemetry" "$ETC/aodh" "$ETC/ceilometer"
mkdir -p "$RUN_DIR/telemetry/lock" "$ETC/aodh" "$ETC/ceilometer"
"$TPY" "$MC_DIR/lib/mctool.py" render-file "$HERE/templates/aodh.conf.in" "$ETC/aodh/aodh.conf" "${R[@]}"
"$TPY" "$MC_DIR/lib/mctool.py" render-file "$HERE/templates/aodh-api-paste.ini.in" \
  "$ETC/aodh/api-paste.ini" "${R[@]}"
"$TPY" "$MC_DIR/lib/mctool.py" render-file "$HERE/templates/ceilometer.conf.in" \
  "$ETC/ceilometer/ceilometer.conf" "${R[@]}"
EVENTS=$RUN_DIR/telemetry/events.jsonl
"$TPY" "$HERE/bootstrap.py" pipeline "$MC_TOP/etc/ceilometer/event_pipeline.yaml" \
  "$ETC/ceilometer/event_pipeline.yaml" "$EVENTS"

mariadb --defaults-file="$ETC/my.cnf" -uroot -e "DROP DATABASE IF EXISTS aodh; CREATE DATABASE aodh"
export PYTHONWARNINGS=ignore PYTHONDONTWRITEBYTECODE=1
"$TBIN/aodh-dbsync" --config-file "$ETC/aodh/aodh.conf" > "$LOG/aodh-dbsync.log" 2>&1 ||
  die "aodh-dbsync failed, see $LOG/aodh-dbsync.log"
ts "aodh database ready"
URL_AODH=http://127.0.0.1:$P_AODH
"$TPY" "$HERE/bootstrap.py" catalog "$RUN_DIR" "$URL_AODH" > "$LOG/telemetry-catalog.log" 2>&1 ||
  die "registering aodh in keystone failed, see $LOG/telemetry-catalog.log"

start aodh-api env AODH_CONFIG_FILE="$ETC/aodh/aodh.conf" "$TBIN/gunicorn" --no-control-socket \
  --chdir "$HERE" -w 1 --threads 4 --keep-alive 120 -b "127.0.0.1:$P_AODH" --timeout 120 \
  aodh_api_app:application
start aodh-listener "$TBIN/aodh-listener" --config-file "$ETC/aodh/aodh.conf"
start aodh-notifier "$TBIN/aodh-notifier" --config-file "$ETC/aodh/aodh.conf"
start ceilometer-notification "$TBIN/ceilometer-agent-notification" \
  --config-file "$MC_TOP/etc/ceilometer/ceilometer.conf.d/instanceha.conf" \
  --config-file "$ETC/ceilometer/ceilometer.conf"
end=$(( $(date +%s) + 90 ))
until curl -s -o /dev/null --max-time 2 "$URL_AODH/"; do
  [ "$(date +%s)" -lt $end ] || die "aodh-api did not answer on $URL_AODH within 90 s, see $LOG/aodh-api.log"
  sleep 0.3
done
for n in aodh-api aodh-listener aodh-notifier ceilometer-notification; do
  recorded_pid "$n" > /dev/null || die "$n exited at start, see $LOG/$n.log"
done
"$TPY" - "$RUN_DIR/telemetry.json" <<PY
import json, sys
json.dump({"aodh": "$URL_AODH", "events_file": "$EVENTS", "python": "$TPY",
           "ceilometer_conf": "$ETC/ceilometer/ceilometer.conf", "aodh_conf": "$ETC/aodh/aodh.conf",
           "logs": ["aodh-api", "aodh-listener", "aodh-notifier", "ceilometer-notification"]},
          open(sys.argv[1], "w"), indent=2)
PY
ts "aodh-api answers"
echo "telemetry up [$RUN_DIR]: aodh=$URL_AODH events=$EVENTS (ceilometer-notification, aodh-listener, aodh-notifier)"
