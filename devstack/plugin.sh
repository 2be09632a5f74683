#!/bin/bash
# devstack plugin of instanceha: deploys the HA path (ZooKeeper, the
# controller with its Nova credentials and a fencing inventory of every
# nova-compute host, the agents), and waits until each answers.
#
# Stack phase              -> function
#   stack pre-install      -> instanceha_check_distro, instanceha_install_packages
#   stack install          -> instanceha_install                (pip install -e of this repo)
#   stack post-config      -> instanceha_configure              (service user, instanceha.conf,
#                                                                Nova's versioned notifications)
#   stack extra            -> instanceha_start                  (ZooKeeper, inventory, controller,
#                                                                agent, RabbitMQ policy; each
#                                                                waited for, stack.sh dies if not)
#   unstack                -> instanceha_stop
#   clean                  -> instanceha_cleanup
#
# Services (devstack/settings enables them): instanceha-zookeeper and
# instanceha-controller where n-api runs, instanceha-agent where n-cpu runs.
# shellcheck disable=SC2154  # devstack's globals (DEST, STACK_USER, SERVICE_HOST, ...)

# -- helpers ------------------------------------------------------------------

# instanceha_url_host HOST: HOST as it goes into a URL (an IPv6 address in brackets)
function instanceha_url_host {
    local h=$1
    if [[ "$h" == *:* && "$h" != \[* ]]; then
        echo "[$h]"
    else
        echo "$h"
    fi
}

function instanceha_bin {
    echo "$(get_python_exec_prefix)/$1"
}

function instanceha_zookeeper_url {
    if [[ -n "$INSTANCEHA_ZOOKEEPER_URL" ]]; then
        echo "$INSTANCEHA_ZOOKEEPER_URL"
    else
        echo "zookeeper://$(instanceha_url_host "$INSTANCEHA_ZOOKEEPER_HOST"):$INSTANCEHA_ZOOKEEPER_PORT"
    fi
}

# instanceha_local_url PORT PATH: a daemon's telemetry endpoint on this host
function instanceha_local_url {
    echo "http://$(instanceha_url_host "$(ipv6_unquote "$SERVICE_LOCAL_HOST")"):$1$2"
}

# -- pre-install ----------------------------------------------------------------

# ZooKeeper comes from the distribution's "zookeeper" package, which Debian and
# Ubuntu have and the RHEL family does not: there, point the plugin at an
# ensemble of your own instead of failing in the middle of stack.sh.
function instanceha_check_distro {
    if is_service_enabled instanceha-zookeeper && ! is_ubuntu; then
        die $LINENO "instanceha-zookeeper needs the 'zookeeper' package of Debian/Ubuntu," \
            "which $DISTRO does not have: run ZooKeeper yourself, set" \
            "INSTANCEHA_ZOOKEEPER_URL=zookeeper://HOST:2181 and disable_service instanceha-zookeeper in local.conf"
    fi
    case $INSTANCEHA_FENCING_DRIVER in
        fake|ipmi|redfish) ;;
        *) die $LINENO "INSTANCEHA_FENCING_DRIVER must be fake, ipmi or redfish, not" \
               "'$INSTANCEHA_FENCING_DRIVER' (for fence agents or fencing levels, write" \
               "INSTANCEHA_FENCING_INVENTORY yourself)" ;;
    esac
}

function instanceha_install_packages {
    if is_service_enabled instanceha-zookeeper; then
        install_package zookeeper libzookeeper-java libslf4j-java default-jre-headless
    fi
}

# -- install ----------------------------------------------------------------------

function instanceha_install {
    setup_develop "$INSTANCEHA_DIR"
}

# -- post-config ------------------------------------------------------------------

function instanceha_create_accounts {
    # Nova's admin rights, in the service project (as masakari's plugin does)
    create_service_user "$INSTANCEHA_SERVICE_USER" admin
}

function instanceha_configure {
    sudo install -d -o "$STACK_USER" -m 0750 "$INSTANCEHA_CONF_DIR"
    rm -f "$INSTANCEHA_CONF"
    touch "$INSTANCEHA_CONF"
    chmod 0640 "$INSTANCEHA_CONF"   # holds the service password and the transport URL
    iniset "$INSTANCEHA_CONF" DEFAULT host "$(hostname)"
    iniset "$INSTANCEHA_CONF" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    iniset "$INSTANCEHA_CONF" coordination backend_url "$(instanceha_zookeeper_url)"
    iniset "$INSTANCEHA_CONF" coordination session_timeout "$INSTANCEHA_SESSION_TIMEOUT"
    iniset "$INSTANCEHA_CONF" telemetry bind_host "$(ipv6_unquote "$SERVICE_LOCAL_HOST")"
    iniset "$INSTANCEHA_CONF" telemetry controller_port "$INSTANCEHA_CONTROLLER_PORT"
    iniset "$INSTANCEHA_CONF" telemetry agent_port "$INSTANCEHA_AGENT_PORT"

    if is_service_enabled instanceha-controller; then
        if is_service_enabled key; then
            instanceha_create_accounts
        fi
        # [nova]: keystoneauth options, as nova.conf's [placement]
        iniset "$INSTANCEHA_CONF" nova auth_type password
        iniset "$INSTANCEHA_CONF" nova auth_url "$KEYSTONE_SERVICE_URI"
        iniset "$INSTANCEHA_CONF" nova username "$INSTANCEHA_SERVICE_USER"
        iniset "$INSTANCEHA_CONF" nova password "$SERVICE_PASSWORD"
        iniset "$INSTANCEHA_CONF" nova user_domain_name "$SERVICE_DOMAIN_NAME"
        iniset "$INSTANCEHA_CONF" nova project_name "$SERVICE_PROJECT_NAME"
        iniset "$INSTANCEHA_CONF" nova project_domain_name "$SERVICE_DOMAIN_NAME"
        iniset "$INSTANCEHA_CONF" nova region_name "$REGION_NAME"
        iniset "$INSTANCEHA_CONF" nova valid_interfaces public
        iniset "$INSTANCEHA_CONF" fencing inventory_file "$INSTANCEHA_FENCING_INVENTORY"
        if [[ "$INSTANCEHA_FENCING_DRIVER" == fake ]]; then
            warn $LINENO "instanceha: fencing with the FAKE driver: nothing is powered off, so an" \
                "evacuated instance may run twice. Test clouds only (INSTANCEHA_FENCING_DRIVER)."
            # shellcheck disable=SC2086  # "<group> <option>"
            iniset "$INSTANCEHA_CONF" $INSTANCEHA_FAKE_FENCING_SWITCH True
        fi
        # instanceha's notifications on the bus (tenants' alarms: doc/source/notifications.rst)
        iniset_rpc_backend instanceha "$INSTANCEHA_CONF" DEFAULT
        iniset "$INSTANCEHA_CONF" oslo_messaging_notifications driver messagingv2
        iniset "$INSTANCEHA_CONF" oslo_messaging_notifications transport_url "$(get_notification_url)"
        iniset "$INSTANCEHA_CONF" nova_notifications enabled "$INSTANCEHA_NOVA_NOTIFICATIONS"
    fi
    if is_service_enabled instanceha-agent && is_service_enabled n-cpu; then
        # the agent reports the host down when nova-compute is not running
        iniset "$INSTANCEHA_CONF" agent watched_processes "nova-compute:nova-compute"
    fi
    if [[ "$INSTANCEHA_NOVA_NOTIFICATIONS" == True ]] && is_service_enabled nova &&
            [[ "$(iniget "$NOVA_CONF" notifications notification_format)" == unversioned ]]; then
        # versioned for instanceha, unversioned still for what reads those
        iniset "$NOVA_CONF" notifications notification_format both
    fi
}

# -- extra -------------------------------------------------------------------------

function instanceha_start_zookeeper {
    local cfg=$INSTANCEHA_ZOOKEEPER_DATA/zoo.cfg
    mkdir -p "$INSTANCEHA_ZOOKEEPER_DATA/data"
    cat > "$cfg" <<EOT
tickTime=$INSTANCEHA_ZOOKEEPER_TICK_MS
dataDir=$INSTANCEHA_ZOOKEEPER_DATA/data
clientPort=$INSTANCEHA_ZOOKEEPER_PORT
clientPortAddress=$(ipv6_unquote "$INSTANCEHA_ZOOKEEPER_HOST")
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,conf
EOT
    run_process instanceha-zookeeper "$INSTANCEHA_JAVA -cp $INSTANCEHA_ZOOKEEPER_CLASSPATH org.apache.zookeeper.server.quorum.QuorumPeerMain $cfg"
    instanceha_wait_zookeeper
}

# ZooKeeper's "ruok" four-letter word answered "imok", or stack.sh dies
function instanceha_wait_zookeeper {
    local host port deadline
    host=$(ipv6_unquote "$INSTANCEHA_ZOOKEEPER_HOST")
    port=$INSTANCEHA_ZOOKEEPER_PORT
    deadline=$(( $(date +%s) + INSTANCEHA_READY_TIMEOUT ))
    echo "Waiting for ZooKeeper on $(instanceha_url_host "$host"):$port ..."
    # in a subshell: no later process inherits the connection
    until [[ $( (exec 3<> "/dev/tcp/$host/$port" && printf ruok >&3 && timeout 2 cat <&3) 2> /dev/null) == imok ]]; do
        if [[ $(date +%s) -ge $deadline ]]; then
            die $LINENO "ZooKeeper did not answer 'ruok' on $(instanceha_url_host "$host"):$port" \
                "within $INSTANCEHA_READY_TIMEOUT s: see journalctl -u devstack@instanceha-zookeeper"
        fi
        sleep 1
    done
}

# instanceha_wait_ready SERVICE URL: /readyz answers 200, or stack.sh dies
function instanceha_wait_ready {
    local service=$1 url=$2 deadline code
    deadline=$(( $(date +%s) + INSTANCEHA_READY_TIMEOUT ))
    echo "Waiting for $service at $url ..."
    while true; do
        code=$(curl -g -s -o /dev/null --max-time 5 -w '%{http_code}' "$url" || true)
        [[ "$code" == 200 ]] && return 0
        if [[ $(date +%s) -ge $deadline ]]; then
            die $LINENO "$service not ready within $INSTANCEHA_READY_TIMEOUT s ($url answered" \
                "'$code'): see journalctl -u devstack@$service"
        fi
        sleep 1
    done
}

# The nova-compute hosts: what Nova lists now, and INSTANCEHA_COMPUTE_HOSTS
function instanceha_compute_hosts {
    {
        openstack --os-cloud devstack-admin --os-region "$REGION_NAME" compute service list \
            --service nova-compute -f value -c Host
        local h
        for h in $INSTANCEHA_COMPUTE_HOSTS; do echo "$h"; done
    } | sort -u
}

# One inventory entry per nova-compute host. An inventory the operator wrote
# (INSTANCEHA_FENCING_INVENTORY, not ours) is left as it is.
function instanceha_write_inventory {
    local inv=$INSTANCEHA_FENCING_INVENTORY host addr pw_dir hosts
    if [[ -e "$inv" ]] && ! grep -q '^# written by the instanceha devstack plugin' "$inv"; then
        echo "instanceha: keeping the fencing inventory $inv"
        return 0
    fi
    hosts=$(instanceha_compute_hosts)
    if [[ -z "$hosts" ]]; then
        die $LINENO "instanceha: Nova lists no nova-compute host and INSTANCEHA_COMPUTE_HOSTS is empty:" \
            "nothing to fence"
    fi
    pw_dir=$INSTANCEHA_CONF_DIR/bmc
    {
        echo "# written by the instanceha devstack plugin ($INSTANCEHA_FENCING_DRIVER driver)"
        [[ "$INSTANCEHA_FENCING_DRIVER" == fake ]] &&
            echo "# FAKE: nothing is powered off; test clouds only"
        echo "hosts:"
        for host in $hosts; do
            echo "  $host:"
            echo "    driver: $INSTANCEHA_FENCING_DRIVER"
            if [[ "$INSTANCEHA_FENCING_DRIVER" == fake ]]; then
                echo "    address: fake-bmc-$host"
                continue
            fi
            addr=$(instanceha_bmc_address "$host")
            echo "    address: $addr"
            echo "    username: $INSTANCEHA_BMC_USERNAME"
            echo "    password_file: $pw_dir/password"
        done
    } > "$inv.new"
    if [[ "$INSTANCEHA_FENCING_DRIVER" != fake ]]; then
        [[ -n "$INSTANCEHA_BMC_PASSWORD" ]] ||
            die $LINENO "INSTANCEHA_BMC_PASSWORD is empty: the $INSTANCEHA_FENCING_DRIVER driver needs the BMCs' password"
        install -d -m 0700 "$pw_dir"
        ( umask 077; printf '%s\n' "$INSTANCEHA_BMC_PASSWORD" > "$pw_dir/password" )
    fi
    chmod 0600 "$inv.new"
    mv "$inv.new" "$inv"
    echo "instanceha: fencing inventory $inv: $(echo "$hosts" | wc -w) host(s) ($INSTANCEHA_FENCING_DRIVER)"
}

# instanceha_bmc_address HOST: its BMC from INSTANCEHA_BMC_ADDRESSES, or stack.sh dies
function instanceha_bmc_address {
    local pair
    for pair in $INSTANCEHA_BMC_ADDRESSES; do
        if [[ "${pair%%=*}" == "$1" ]]; then
            echo "${pair#*=}"
            return 0
        fi
    done
    die $LINENO "no BMC for nova-compute host '$1' in INSTANCEHA_BMC_ADDRESSES ('$INSTANCEHA_BMC_ADDRESSES'):" \
        "add $1=<its BMC address>, or it can never be fenced"
}

# Bound the notification queues nobody may read: the versioned_notifications.*
# queues Nova's notifier declares (instanceha reads its own pool queue), the
# notifications.* ones where no Ceilometer reads, and instanceha's pool queue
# while no controller leads. Oldest messages go first.
function instanceha_rabbit_policy {
    local definition="{\"max-length\":$INSTANCEHA_QUEUE_MAX_LENGTH,\"message-ttl\":$INSTANCEHA_QUEUE_TTL_MS,\"overflow\":\"drop-head\"}"
    sudo rabbitmqctl set_policy --apply-to queues --priority 1 instanceha-notifications \
        '^(versioned_notifications|notifications)\.|^instanceha-nova-events$' "$definition"
}

function instanceha_start {
    if is_service_enabled instanceha-zookeeper; then
        instanceha_start_zookeeper
    fi
    if [[ "$INSTANCEHA_RABBIT_POLICY" == True ]] && is_service_enabled rabbit; then
        instanceha_rabbit_policy
    fi
    if is_service_enabled instanceha-agent; then
        run_process instanceha-agent "$(instanceha_bin instanceha-agent) --config-file $INSTANCEHA_CONF"
        instanceha_wait_ready instanceha-agent "$(instanceha_local_url "$INSTANCEHA_AGENT_PORT" /readyz)"
    fi
    if is_service_enabled instanceha-controller; then
        if is_service_enabled n-cpu; then
            wait_for_compute "$NOVA_READY_TIMEOUT"
        fi
        instanceha_write_inventory
        run_process instanceha-controller "$(instanceha_bin instanceha-controller) --config-file $INSTANCEHA_CONF"
        instanceha_wait_ready instanceha-controller "$(instanceha_local_url "$INSTANCEHA_CONTROLLER_PORT" /readyz)"
    fi
}

# -- unstack, clean --------------------------------------------------------------------

function instanceha_stop {
    stop_process instanceha-agent
    stop_process instanceha-controller
    stop_process instanceha-zookeeper
}

function instanceha_cleanup {
    rm -rf "$INSTANCEHA_ZOOKEEPER_DATA"
    sudo rm -rf "$INSTANCEHA_CONF_DIR"
}

# -- dispatch -------------------------------------------------------------------------------

if is_service_enabled instanceha-controller instanceha-agent instanceha-zookeeper; then
    if [[ "$1" == "stack" && "$2" == "pre-install" ]]; then
        echo_summary "Checking and installing instanceha's system packages"
        instanceha_check_distro
        instanceha_install_packages
    elif [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing instanceha"
        instanceha_install
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring instanceha"
        instanceha_configure
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting instanceha"
        instanceha_start
    fi
    if [[ "$1" == "unstack" ]]; then
        instanceha_stop
    fi
    if [[ "$1" == "clean" ]]; then
        instanceha_cleanup
    fi
fi
