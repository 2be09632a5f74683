#!/bin/bash
# devstack plugin of instanceha.
#
# Stack phase              -> function called
#   stack pre-install      -> instanceha_install_zookeeper   (Debian/Ubuntu zookeeper package)
#   stack install          -> instanceha_install             (pip install of this repo)
#   stack post-config      -> instanceha_configure           (instanceha.conf, fencing inventory)
#   stack extra            -> instanceha_start               (ZooKeeper, controller, agent)
#   unstack                -> instanceha_stop
#   clean                  -> instanceha_cleanup
#
# The controller runs where instanceha-controller is enabled, the agent where
# n-cpu runs. Fencing uses the in-memory "fake" driver by default: devstack
# computes have no BMC, so nothing is ever really powered off.
# shellcheck disable=SC2154  # devstack's globals (DEST, DATA_DIR, STACK_USER, ...)

function instanceha_install_zookeeper {
    install_package zookeeper libslf4j-java default-jre-headless
}

function instanceha_install {
    setup_develop "$INSTANCEHA_DIR"
}

function instanceha_configure {
    sudo install -d -o "$STACK_USER" -m 0750 "$INSTANCEHA_CONF_DIR"
    iniset "$INSTANCEHA_CONF" DEFAULT host "$(hostname)"
    iniset "$INSTANCEHA_CONF" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    iniset "$INSTANCEHA_CONF" coordination backend_url \
        "zookeeper://$INSTANCEHA_ZOOKEEPER_HOST:$INSTANCEHA_ZOOKEEPER_PORT"
    iniset "$INSTANCEHA_CONF" coordination session_timeout "$INSTANCEHA_SESSION_TIMEOUT"
    if [ "$INSTANCEHA_FENCING_DRIVER" = fake ] && [ ! -e "$INSTANCEHA_FENCING_INVENTORY" ]; then
        instanceha_write_fake_inventory
    fi
}

function instanceha_write_fake_inventory {
    # one fake BMC per compute host known to this node
    local host
    host=$(hostname)
    cat > "$INSTANCEHA_FENCING_INVENTORY" <<EOT
# written by the instanceha devstack plugin: fake BMCs, nothing is powered off
hosts:
  $host:
    driver: fake
    address: fake-bmc-$host
EOT
    chmod 0640 "$INSTANCEHA_FENCING_INVENTORY"
}

function instanceha_start_zookeeper {
    local cfg=$INSTANCEHA_ZOOKEEPER_DATA/zoo.cfg
    mkdir -p "$INSTANCEHA_ZOOKEEPER_DATA/data"
    cat > "$cfg" <<EOT
tickTime=$INSTANCEHA_ZOOKEEPER_TICK_MS
dataDir=$INSTANCEHA_ZOOKEEPER_DATA/data
clientPort=$INSTANCEHA_ZOOKEEPER_PORT
clientPortAddress=$INSTANCEHA_ZOOKEEPER_HOST
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,conf
EOT
    run_process instanceha-zookeeper "java -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar org.apache.zookeeper.server.quorum.QuorumPeerMain $cfg"
}

function instanceha_start {
    if is_service_enabled instanceha-controller; then
        instanceha_start_zookeeper
        run_process instanceha-controller "$(get_python_exec_prefix)/instanceha-controller --config-file $INSTANCEHA_CONF"
    fi
    if is_service_enabled instanceha-agent; then
        run_process instanceha-agent "$(get_python_exec_prefix)/instanceha-agent --config-file $INSTANCEHA_CONF"
    fi
}

function instanceha_stop {
    stop_process instanceha-agent
    stop_process instanceha-controller
    stop_process instanceha-zookeeper
}

function instanceha_cleanup {
    rm -rf "$INSTANCEHA_ZOOKEEPER_DATA"
    sudo rm -rf "$INSTANCEHA_CONF_DIR"
}

if [[ "$1" == "stack" && "$2" == "pre-install" ]]; then
    instanceha_install_zookeeper
elif [[ "$1" == "stack" && "$2" == "install" ]]; then
    instanceha_install
elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    instanceha_configure
elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
    instanceha_start
fi
if [[ "$1" == "unstack" ]]; then
    instanceha_stop
fi
if [[ "$1" == "clean" ]]; then
    instanceha_cleanup
fi
