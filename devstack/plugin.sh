#!/bin/bash
# devstack plugin of instanceha: deploys the HA path (ZooKeeper, the
# controller with its Nova credentials and a fencing inventory of every
# nova-compute host, the agents), and waits until each answers.
#
# Coordination is secure as in production (doc/source/security.rst): TLS on
# ZooKeeper's secureClientPort with a CA and server certificate made here by
# openssl, digest credentials per identity made by instanceha's own CLI from
# the controllers' key (files mode 0600, owned by STACK_USER, never on a
# command line), least-privilege ACLs; [coordination] insecure stays off.
#
# Stack phase              -> function
#   stack pre-install      -> instanceha_check_distro, instanceha_install_packages
#   stack install          -> instanceha_install                (pip install -e of this repo)
#   stack post-config      -> instanceha_configure              (service user, instanceha.conf,
#                                                                TLS CA and server certificate,
#                                                                credentials, Nova's versioned
#                                                                notifications)
#   stack extra            -> instanceha_start                  (ZooKeeper, inventory, controller,
#                                                                agent, RabbitMQ policy; each
#                                                                checked and waited for, then
#                                                                "instanceha coordination check";
#                                                                stack.sh dies if one fails)
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

# this node's host name, as Nova's compute service and the agent name it
function instanceha_host {
    echo "${INSTANCEHA_HOST:-$(hostname)}"
}

# the client URL: ZooKeeper's TLS port
function instanceha_zookeeper_url {
    if [[ -n "$INSTANCEHA_ZOOKEEPER_URL" ]]; then
        echo "$INSTANCEHA_ZOOKEEPER_URL"
    else
        echo "zookeeper://$(instanceha_url_host "$INSTANCEHA_ZOOKEEPER_HOST"):$INSTANCEHA_ZOOKEEPER_SECURE_PORT"
    fi
}

# instanceha_role_conf ROLE: the file naming ROLE's credentials, read after
# instanceha.conf (none for the operator: instanceha.conf names theirs)
function instanceha_role_conf {
    case $1 in
        controller) echo "$INSTANCEHA_CONTROLLER_CONF" ;;
        agent) echo "$INSTANCEHA_AGENT_CONF" ;;
    esac
}

# instanceha_cli ROLE ARGS...: instanceha's CLI with ROLE's configuration.
# Only file names go on its command line, never a secret.
function instanceha_cli {
    local files=(--config-file "$INSTANCEHA_CONF") conf
    conf=$(instanceha_role_conf "$1")
    shift
    [[ -n "$conf" ]] && files+=(--config-file "$conf")
    "$(instanceha_bin instanceha)" "${files[@]}" "$@"
}

# instanceha_config_check ROLE: what the daemon checks at start (credentials,
# TLS files, inventory...), or stack.sh dies with instanceha's own message
function instanceha_config_check {
    local role=$1 out
    if ! out=$(instanceha_cli "$role" config check --role "$role" 2>&1); then
        echo "$out"
        die $LINENO "instanceha-$role: 'instanceha config check --role $role' failed on" \
            "$INSTANCEHA_CONF and $(instanceha_role_conf "$role"):" \
            "$(echo "$out" | grep FAILED | head -3 | tr '\n' ' ')"
    fi
    echo "$out"
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
            "which $DISTRO does not have: run ZooKeeper yourself (TLS on its secureClientPort)," \
            "set INSTANCEHA_ZOOKEEPER_URL=zookeeper://HOST:2281, INSTANCEHA_ZOOKEEPER_CA_FILE" \
            "and disable_service instanceha-zookeeper in local.conf"
    fi
    if is_service_enabled instanceha-zookeeper; then
        instanceha_check_zookeeper_version
    fi
    instanceha_check_copied_files
    case $INSTANCEHA_FENCING_DRIVER in
        fake|ipmi|redfish) ;;
        *) die $LINENO "INSTANCEHA_FENCING_DRIVER must be fake, ipmi or redfish, not" \
               "'$INSTANCEHA_FENCING_DRIVER' (for fence agents or fencing levels, write" \
               "INSTANCEHA_FENCING_INVENTORY yourself)" ;;
    esac
}

# ZooKeeper serves TLS (secureClientPort, PEM key stores) from 3.5.5 on:
# Debian 12 has 3.8, Ubuntu 24.04 3.9; Ubuntu 22.04's 3.4 cannot.
function instanceha_check_zookeeper_version {
    local version
    version=$(apt-cache policy zookeeper 2> /dev/null | awk '/Candidate:/ {print $2}')
    version=${version#*:}
    if [[ -z "$version" || "$version" == "(none)" ]] ||
            [[ $(printf '%s\n' 3.5.5 "$version" | sort -V | head -n 1) != 3.5.5 ]]; then
        die $LINENO "instanceha-zookeeper needs ZooKeeper 3.5.5 or newer for TLS (its" \
            "secureClientPort); this $DISTRO offers '${version:-none}': run ZooKeeper yourself," \
            "set INSTANCEHA_ZOOKEEPER_URL and INSTANCEHA_ZOOKEEPER_CA_FILE, and" \
            "disable_service instanceha-zookeeper in local.conf"
    fi
}

# What a node that does not make them needs from the controller node, before
# anything is installed: the ZooKeeper CA and, on a compute-only node, its
# agent's credentials (doc: devstack/README.rst, multi-node).
function instanceha_check_copied_files {
    if ! is_service_enabled instanceha-zookeeper && [[ ! -r "$INSTANCEHA_ZOOKEEPER_CA_FILE" ]]; then
        die $LINENO "instanceha: no ZooKeeper CA at $INSTANCEHA_ZOOKEEPER_CA_FILE" \
            "(INSTANCEHA_ZOOKEEPER_CA_FILE): copy the CA that signed the ZooKeeper server's" \
            "certificate there (from the node running instanceha-zookeeper: the same path)"
    fi
    if is_service_enabled instanceha-agent && ! is_service_enabled instanceha-controller &&
            [[ ! -e "$INSTANCEHA_AGENT_CREDENTIALS" ]]; then
        die $LINENO "instanceha-agent: no credentials at $INSTANCEHA_AGENT_CREDENTIALS" \
            "(INSTANCEHA_AGENT_CREDENTIALS): list $(instanceha_host) in INSTANCEHA_COMPUTE_HOSTS" \
            "of the controller node, which makes $INSTANCEHA_CONF_DIR/agents/$(instanceha_host).yaml," \
            "and copy that file here (owner $STACK_USER, mode 0600)"
    fi
}

function instanceha_install_packages {
    if is_service_enabled instanceha-zookeeper; then
        # Netty: ZooKeeper's TLS port; openssl: its CA and certificate
        install_package zookeeper libzookeeper-java libslf4j-java libnetty-java \
            default-jre-headless openssl
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
    rm -f "$INSTANCEHA_CONF" "$INSTANCEHA_CONTROLLER_CONF" "$INSTANCEHA_AGENT_CONF"
    touch "$INSTANCEHA_CONF"
    chmod 0640 "$INSTANCEHA_CONF"   # holds the service password and the transport URL
    iniset "$INSTANCEHA_CONF" DEFAULT host "$(instanceha_host)"
    iniset "$INSTANCEHA_CONF" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    iniset "$INSTANCEHA_CONF" coordination backend_url "$(instanceha_zookeeper_url)"
    iniset "$INSTANCEHA_CONF" coordination session_timeout "$INSTANCEHA_SESSION_TIMEOUT"
    iniset "$INSTANCEHA_CONF" coordination tls True
    iniset "$INSTANCEHA_CONF" coordination tls_ca_file "$INSTANCEHA_ZOOKEEPER_CA_FILE"
    if is_service_enabled instanceha-zookeeper; then
        instanceha_make_tls
    fi
    instanceha_configure_credentials
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
    if is_service_enabled instanceha-agent; then
        # where a restarted agent finds its session again (its password: a
        # directory only STACK_USER enters, on tmpfs, as systemd's
        # RuntimeDirectory makes it for the packaged unit)
        sudo install -d -o "$STACK_USER" -m 0700 "$INSTANCEHA_AGENT_SESSION_DIR"
        # and again at each boot (/run is a tmpfs): else the agent runs after a
        # reboot without the file, and its next restart opens a new session
        sudo install -d -m 0755 "$INSTANCEHA_TMPFILES_DIR"
        echo "d $INSTANCEHA_AGENT_SESSION_DIR 0700 $STACK_USER - -" |
            sudo tee "$INSTANCEHA_TMPFILES_DIR/instanceha.conf" > /dev/null
        iniset "$INSTANCEHA_CONF" agent session_file "$INSTANCEHA_AGENT_SESSION_DIR/agent-session.json"
    fi
    if [[ "$INSTANCEHA_NOVA_NOTIFICATIONS" == True ]] && is_service_enabled nova &&
            [[ "$(iniget "$NOVA_CONF" notifications notification_format)" == unversioned ]]; then
        # versioned for instanceha, unversioned still for what reads those
        iniset "$NOVA_CONF" notifications notification_format both
    fi
}

# -- TLS and credentials --------------------------------------------------------------

# A CA (kept across stacks: the compute nodes hold a copy) and ZooKeeper's
# server certificate for INSTANCEHA_ZOOKEEPER_HOST, made by openssl; the
# private keys never leave INSTANCEHA_ZOOKEEPER_DATA/tls (0700).
function instanceha_make_tls {
    local dir=$INSTANCEHA_ZOOKEEPER_DATA/tls zk_host san
    zk_host=$(ipv6_unquote "$INSTANCEHA_ZOOKEEPER_HOST")
    mkdir -p "$INSTANCEHA_ZOOKEEPER_DATA"
    install -d -m 0700 "$dir"
    if [[ ! -s "$dir/ca.key" || ! -s "$dir/ca.pem" ]]; then
        cat > "$dir/ca.cnf" <<EOT
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = instanceha devstack ZooKeeper CA
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOT
        ( umask 077
          openssl req -x509 -config "$dir/ca.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
              -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$INSTANCEHA_TLS_DAYS" ) ||
            die $LINENO "instanceha: openssl could not make the ZooKeeper CA in $dir"
    fi
    # the names clients use: the listening address, this host, loopback
    if [[ "$zk_host" =~ ^[0-9.]+$ || "$zk_host" == *:* ]]; then
        san="IP:$zk_host"
    else
        san="DNS:$zk_host"
    fi
    san+=", DNS:$(instanceha_host), DNS:localhost"
    [[ "$zk_host" == 127.0.0.1 ]] || san+=", IP:127.0.0.1"
    cat > "$dir/server.ext" <<EOT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOT
    ( umask 077
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
          -subj "/CN=instanceha devstack ZooKeeper" -keyout "$dir/server.key" -out "$dir/server.csr" &&
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
          -set_serial "0x$(openssl rand -hex 16)" -days "$INSTANCEHA_TLS_DAYS" \
          -extfile "$dir/server.ext" -out "$dir/server.crt" &&
      # ZooKeeper's PEM key store: the private key, then the certificate
      cat "$dir/server.key" "$dir/server.crt" > "$dir/server.pem" ) ||
        die $LINENO "instanceha: openssl could not make ZooKeeper's server certificate in $dir"
    rm -f "$dir/server.csr"
    chmod 0600 "$dir/server.pem" "$dir/server.key"
    install -m 0644 "$dir/ca.pem" "$INSTANCEHA_ZOOKEEPER_CA_FILE"
    echo "instanceha: ZooKeeper TLS certificate for $san, CA $INSTANCEHA_ZOOKEEPER_CA_FILE"
}

# instanceha_credentials WHAT [HOST] FILE: a credentials file (0600, owned by
# STACK_USER) made by "instanceha coordination credentials" from the
# controllers' key; remade at every stack (the passwords derive from the key)
function instanceha_credentials {
    local file=${*: -1}
    rm -f "$file"
    instanceha_cli controller coordination credentials "${@:1:$#-1}" --output "$file" ||
        die $LINENO "instanceha: 'instanceha coordination credentials ${*:1:$#-1}' could not" \
            "write $file"
}

# Each daemon's [coordination] credentials_file, in its own file read after
# instanceha.conf; the CLI's (the operators') in instanceha.conf. The
# controllers' key is made once and kept: ZooKeeper's data, kept across
# stacks, carries ACLs derived from it.
function instanceha_configure_credentials {
    local host
    if is_service_enabled instanceha-controller; then
        iniset "$INSTANCEHA_CONTROLLER_CONF" coordination credentials_file \
            "$INSTANCEHA_CONTROLLER_CREDENTIALS"
        chmod 0640 "$INSTANCEHA_CONTROLLER_CONF"
        if [[ ! -s "$INSTANCEHA_CONTROLLER_CREDENTIALS" ]]; then
            rm -f "$INSTANCEHA_CONTROLLER_CREDENTIALS"
            instanceha_cli controller coordination credentials new-key \
                --output "$INSTANCEHA_CONTROLLER_CREDENTIALS" ||
                die $LINENO "instanceha: could not make the controllers' key" \
                    "$INSTANCEHA_CONTROLLER_CREDENTIALS"
        fi
        chmod 0600 "$INSTANCEHA_CONTROLLER_CREDENTIALS"
        instanceha_credentials operator "$INSTANCEHA_OPERATOR_CREDENTIALS"
        iniset "$INSTANCEHA_CONF" coordination credentials_file "$INSTANCEHA_OPERATOR_CREDENTIALS"
        if is_service_enabled instanceha-agent; then
            instanceha_credentials agent "$(instanceha_host)" "$INSTANCEHA_AGENT_CREDENTIALS"
        fi
        # the compute-only nodes' agents: made here, copied there
        if [[ -n "$INSTANCEHA_COMPUTE_HOSTS" ]]; then
            install -d -m 0700 "$INSTANCEHA_CONF_DIR/agents"
            for host in $INSTANCEHA_COMPUTE_HOSTS; do
                [[ "$host" == "$(instanceha_host)" ]] && continue
                instanceha_credentials agent "$host" "$INSTANCEHA_CONF_DIR/agents/$host.yaml"
                echo "instanceha: before $host stacks, copy $INSTANCEHA_CONF_DIR/agents/$host.yaml" \
                    "to $host as $INSTANCEHA_AGENT_CREDENTIALS (owner $STACK_USER, mode 0600)," \
                    "and $INSTANCEHA_ZOOKEEPER_CA_FILE to the same path"
            done
        fi
    fi
    if is_service_enabled instanceha-agent; then
        iniset "$INSTANCEHA_AGENT_CONF" coordination credentials_file "$INSTANCEHA_AGENT_CREDENTIALS"
        chmod 0640 "$INSTANCEHA_AGENT_CONF"
    fi
}

# -- extra -------------------------------------------------------------------------

# zookeeper.jar and what Debian's does not name: the Netty jars of the TLS port
function instanceha_zookeeper_classpath {
    if [[ -n "$INSTANCEHA_ZOOKEEPER_CLASSPATH" ]]; then
        echo "$INSTANCEHA_ZOOKEEPER_CLASSPATH"
        return 0
    fi
    local jar cp=/usr/share/java/zookeeper.jar
    for jar in zookeeper-jute slf4j-api slf4j-simple netty-buffer netty-codec netty-common \
            netty-handler netty-resolver netty-transport netty-transport-native-unix-common \
            netty-transport-native-epoll; do
        [[ -e "/usr/share/java/$jar.jar" ]] && cp+=":/usr/share/java/$jar.jar"
    done
    echo "$cp"
}

# TLS on the secure port where the clients connect; the plain port, which
# ZooKeeper keeps for its four-letter words, on loopback only. No server-side
# setting is needed for the digest scheme: every node instanceha creates
# carries ACLs naming the identities, and world:anyone gets nothing.
function instanceha_start_zookeeper {
    local cfg=$INSTANCEHA_ZOOKEEPER_DATA/zoo.cfg tls=$INSTANCEHA_ZOOKEEPER_DATA/tls
    mkdir -p "$INSTANCEHA_ZOOKEEPER_DATA/data"
    cat > "$cfg" <<EOT
tickTime=$INSTANCEHA_ZOOKEEPER_TICK_MS
dataDir=$INSTANCEHA_ZOOKEEPER_DATA/data
clientPort=$INSTANCEHA_ZOOKEEPER_PORT
clientPortAddress=127.0.0.1
secureClientPort=$INSTANCEHA_ZOOKEEPER_SECURE_PORT
secureClientPortAddress=$(ipv6_unquote "$INSTANCEHA_ZOOKEEPER_HOST")
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=$tls/server.pem
ssl.keyStore.type=PEM
ssl.trustStore.location=$tls/ca.pem
ssl.trustStore.type=PEM
ssl.clientAuth=want
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,conf
EOT
    run_process instanceha-zookeeper "$INSTANCEHA_JAVA -Dzookeeper.jmx.log4j.disable=true -cp $(instanceha_zookeeper_classpath) org.apache.zookeeper.server.quorum.QuorumPeerMain $cfg"
    instanceha_wait_zookeeper
}

# ZooKeeper's "ruok" four-letter word answered "imok" on the local plain
# port, or stack.sh dies (TLS and credentials: the daemons' readiness and
# "instanceha coordination check")
function instanceha_wait_zookeeper {
    local host=127.0.0.1 port deadline
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
    # the controller first: its leader provisions a slot for every host of
    # the inventory and every nova-compute host, without which an agent
    # waits ("not provisioned") and is not ready
    if is_service_enabled instanceha-controller; then
        if is_service_enabled n-cpu; then
            wait_for_compute "$NOVA_READY_TIMEOUT"
        fi
        instanceha_write_inventory
        instanceha_config_check controller
        run_process instanceha-controller "$(instanceha_bin instanceha-controller) --config-file $INSTANCEHA_CONF --config-file $(instanceha_role_conf controller)"
        instanceha_wait_ready instanceha-controller "$(instanceha_local_url "$INSTANCEHA_CONTROLLER_PORT" /readyz)"
    fi
    if is_service_enabled instanceha-agent; then
        instanceha_config_check agent
        run_process instanceha-agent "$(instanceha_bin instanceha-agent) --config-file $INSTANCEHA_CONF --config-file $(instanceha_role_conf agent)"
        instanceha_wait_ready instanceha-agent "$(instanceha_local_url "$INSTANCEHA_AGENT_PORT" /readyz)"
    fi
    if is_service_enabled instanceha-controller; then
        instanceha_check_coordination
    fi
}

# "instanceha coordination check" with the controllers' credentials: the
# whole tree over TLS, every node's ACL no wider than the model; stack.sh
# dies on any finding or if the check cannot run
function instanceha_check_coordination {
    local out rc=0
    out=$(instanceha_cli controller coordination check 2>&1) || rc=$?
    echo "$out"
    if [[ $rc -ne 0 ]]; then
        die $LINENO "instanceha coordination check failed (exit $rc): $(echo "$out" | tail -n 3 | tr '\n' ' ')"
    fi
}

# -- unstack, clean --------------------------------------------------------------------

function instanceha_stop {
    stop_process instanceha-agent
    stop_process instanceha-controller
    stop_process instanceha-zookeeper
}

function instanceha_cleanup {
    rm -rf "$INSTANCEHA_ZOOKEEPER_DATA"   # its CA too: a new one at the next stack
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
