#!/bin/bash
# Installs everything instanceha's tests and demo need on a fresh Debian 12
# machine: Debian packages (ZooKeeper, Java, OpenIPMI, RabbitMQ, MariaDB,
# libvirt, QEMU, ...), the project's virtualenv (.venv) with instanceha installed
# in it, and the tiny guest image of the libvirt tests (.run/guest-image, built
# from Debian packages by tools/harness/guestimage.py).
#
#   tools/install.sh            # idempotent; re-running installs only what is missing
#
# Env: INSTANCEHA_SKIP_APT=1 skips the Debian part (no root, or already there).
# System daemons of the packages (mariadb, rabbitmq, epmd, zookeeper, libvirtd,
# prometheus)
# are kept from starting: the project starts its own, by hand, on loopback.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd -P)
VENV=${INSTANCEHA_VENV:-$TOP/.venv}
T0=$(date +%s)
say() { echo "[install $(( $(date +%s) - T0 ))s] $*"; }

APT_PKGS=(
  zookeeper libzookeeper-java libslf4j-java default-jre-headless  # coordinator
  openipmi ipmitool                                              # IPMI BMC emulator + client
  fence-agents snmp                                              # ClusterLabs fence agents (fence_agent driver); snmpget/snmpset for fence_apc_snmp
  rabbitmq-server                                                # notification bus, nova RPC
  mariadb-server mariadb-client                                  # nova/keystone databases
  libvirt-daemon-system qemu-system-x86                          # real guest events (TCG)
  prometheus                                                     # scrapes the daemons in tests; promtool checks the rules
  stress-ng                                                      # foreign CPU load in the benchmarks
  libvirt-dev pkg-config                                         # to build libvirt-python
  python3 python3-venv python3-dev gcc                           # the venv
  openssl procps iproute2 ca-certificates curl shellcheck
  iptables                                                       # a simulated host's address silenced (dead host)
)

if [ "${INSTANCEHA_SKIP_APT:-0}" != 1 ]; then
  SUDO=
  if [ "$(id -u)" != 0 ]; then
    command -v sudo > /dev/null || { echo "tools/install.sh: need root or sudo for apt-get (or INSTANCEHA_SKIP_APT=1)" >&2; exit 1; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    for i in 1 2 3 4 5 6 7 8 9 10; do
      $SUDO apt-get update -q && break
      [ $i = 10 ] && { echo "tools/install.sh: apt-get update failed" >&2; exit 1; }
      say "apt-get update failed (lock?), retry $i in 6 s"; sleep 6
    done
    say "installing Debian packages: ${missing[*]}"
    POLICY=/usr/sbin/policy-rc.d CREATED_POLICY=0
    if [ ! -e $POLICY ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee $POLICY > /dev/null
      $SUDO chmod 755 $POLICY; CREATED_POLICY=1
      trap 'if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi' EXIT
    fi
    for i in 1 2 3 4 5 6 7 8 9 10; do
      $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" && break
      [ $i = 10 ] && { echo "tools/install.sh: apt-get install failed" >&2; exit 1; }
      say "apt-get install failed (lock?), retry $i in 6 s"; sleep 6
    done
    if [ $CREATED_POLICY = 1 ]; then $SUDO rm -f $POLICY; CREATED_POLICY=0; fi
    if [ -d /run/systemd/system ]; then
      for u in mariadb.service rabbitmq-server.service epmd.service epmd.socket zookeeper.service \
               libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket \
               virtlogd.socket virtlogd-admin.socket virtlockd.socket virtlockd-admin.socket \
               libvirt-guests.service prometheus.service prometheus-node-exporter.service; do
        $SUDO systemctl disable --now "$u" > /dev/null 2>&1 || true
      done
    fi
  else
    say "Debian packages already installed"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV"
  python3 -m venv "$VENV"
fi
say "pip install -e .[test,docs] (pinned by tools/constraints.txt)"
"$VENV/bin/python" -m pip install -q --upgrade pip > /dev/null
"$VENV/bin/python" -m pip install -q -c "$TOP/tools/constraints.txt" -e "${TOP}[test,docs]"
"$VENV/bin/python" -m pip check
say "guest image for the libvirt tests (cached in .run/guest-image)"
"$VENV/bin/python" "$TOP/tools/harness/guestimage.py" build > /dev/null
say "done: $VENV"
