#!/usr/bin/env bash
# Local Kafka (KRaft) + PostgreSQL for development and tests, without Docker.
#
#   deploy/local/infra.sh start|stop|clean|status|env
#   deploy/local/infra.sh kafka-kill N | kafka-start N | pg-restart
#
# Environment (defaults in brackets):
#   REFLEXE_STATE_DIR      [<repo>/.local/infra]  broker data, PG data dir, logs, pid files
#   REFLEXE_CACHE_DIR      [${XDG_CACHE_HOME:-$HOME/.cache}/reflexe]  downloaded jars, shared by all clones
#   REFLEXE_KAFKA_VERSION  [4.3.1]  org.apache.kafka:kafka_2.13 version fetched from Maven Central
#   REFLEXE_KAFKA_NODES    [1, or what the state dir holds]  Kafka nodes, each broker and controller
#   KAFKA_PORT [19092]  KAFKA_CONTROLLER_PORT [19093]  PG_PORT [15432]
#   REFLEXE_PYTHON         [<repo>/.venv/bin/python]  applies the Kafka ACLs (reflexe_common.kafka_acls)
#   REFLEXE_PG_DURABLE     [0]  1: PostgreSQL flushes every commit (fsync, synchronous_commit), as in production
# Everything listens on 127.0.0.1 only.
#
# Kafka authenticates every client (SASL SCRAM-SHA-512 on the client listener) and authorizes
# with ACLs (deny unless allowed): one principal per service, declared in
# libs/common/src/reflexe_common/kafka_acls.py, plus the super user `admin` for this script,
# tests and admin tooling. Passwords are random, made at the first start and kept in the state
# dir; `env` prints them. No TLS locally (loopback only); production uses SASL_SSL.
#
# A cluster like production's: REFLEXE_KAFKA_NODES=3 deploy/local/infra.sh start
# starts three KRaft nodes, each broker and controller (a quorum of three voters), with the same
# authentication and ACLs; brokers replicate to each other over the authenticated client
# listener. Node N (1-based) listens on KAFKA_PORT+2(N-1) for clients and KAFKA_CONTROLLER_PORT+2(N-1)
# for the quorum (19092..19097 by default), keeps its data, config and pid file in
# kafka/node-N/ and logs to logs/kafka-N-*. Topics then have three replicas, two of them in sync
# for a write to be acknowledged (`env` exports KAFKA_TOPIC_REPLICATION_FACTOR=3 and
# KAFKA_TOPIC_MIN_INSYNC_REPLICAS=2, read by reflexe_common.topics), and so do the brokers'
# internal topics (consumer offsets, transaction state): any one node can die. The state dir
# remembers its node count: stop, clean, status and env need no REFLEXE_KAFKA_NODES, and a
# state dir cannot be restarted with another count (clean it, or use another state dir).
#   kafka-kill N   kill -9 node N (a crash: no controlled shutdown); nothing if it is not running
#   kafka-start N  start node N again and wait until it serves; nothing if it already does
#   pg-restart     crash PostgreSQL (immediate stop: no checkpoint, recovery at the start) and start
#                  it again; its clients see their connections cut, as in a failover
#
# As root, PostgreSQL runs as the 'postgres' OS user, which may not be able to enter the clone
# (under /root, in a 0700 temporary dir): its cluster then lives in a directory of its own,
# /var/tmp/reflexe-postgres/<hash of the state dir>, linked from the state dir and removed by clean.
set -euo pipefail

LOG_NAME=infra
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# 4.4.0 is listed on Maven Central but its kafka-tools-api jar is missing there, so it
# cannot be resolved; 4.3.1 is the newest 4.x whose whole dependency tree resolves.
KAFKA_VERSION="${REFLEXE_KAFKA_VERSION:-4.3.1}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
PG_PORT="${PG_PORT:-15432}"

# Logging glue for the broker: Kafka's poms only pull slf4j-api 1.7 and log4j-core, with
# no binding between them, so the broker would log nothing. slf4j 2 + log4j-slf4j2-impl
# is what the official Kafka 4 distribution ships.
SLF4J_VERSION=2.0.17
LOG4J_VERSION=2.25.4
# A fixed cluster id (base64 of 16 bytes) avoids a JVM launch just to generate one.
KAFKA_CLUSTER_ID="cmVmbGV4ZS1sb2NhbC1rZg"

KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DIR="$STATE_DIR/kafka"
KAFKA_CREDENTIALS="$KAFKA_DIR/credentials"
# How many nodes the state dir's Kafka has, written at its first start.
KAFKA_NODES_FILE="$KAFKA_DIR/nodes"
KAFKA_SERVICES=(referral capacity indicators notify)
PG_SHARED_BASE=/var/tmp/reflexe-postgres
# A cluster made in the state dir before this layout keeps its place (it was reachable).
if [[ $EUID -eq 0 && ! ( -d $STATE_DIR/postgres/data && ! -L $STATE_DIR/postgres ) ]]; then
    PG_ROOT="$PG_SHARED_BASE/$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-16)"
else
    PG_ROOT="$STATE_DIR/postgres"
fi
PGDATA="$PG_ROOT/data"
PG_SOCKET_DIR="$PG_ROOT/socket"
PG_LOG="$PG_ROOT/postgres.log"
LOG_DIR="$STATE_DIR/logs"
STATE_MARKER="$STATE_DIR/.reflexe-infra"
KAFKA_JAVA=(java -Xms256m -Xmx1g -Djava.awt.headless=true -cp "$KAFKA_LIBS/*")

# ---------------------------------------------------------------- Kafka

recorded_kafka_nodes() {
    if [[ -f $KAFKA_NODES_FILE ]]; then
        cat "$KAFKA_NODES_FILE"
    elif [[ -f $KAFKA_DIR/data/meta.properties ]]; then
        echo 1 # made before the node count was kept
    fi
}

KAFKA_NODES_RECORDED="$(recorded_kafka_nodes)"
[[ -z ${REFLEXE_KAFKA_NODES:-} || $REFLEXE_KAFKA_NODES =~ ^[1-9]$ ]] \
    || die "REFLEXE_KAFKA_NODES must be a number of nodes from 1 to 9, not '$REFLEXE_KAFKA_NODES'"
KAFKA_NODES="${KAFKA_NODES_RECORDED:-${REFLEXE_KAFKA_NODES:-1}}"
# Three copies of every partition on three nodes or more, of which two must hold a write for it
# to be acknowledged (acks=all): one node can die without losing a write or stopping producers.
KAFKA_REPLICATION=$((KAFKA_NODES < 3 ? KAFKA_NODES : 3))
KAFKA_MIN_INSYNC=$((KAFKA_REPLICATION > 1 ? KAFKA_REPLICATION - 1 : 1))

kafka_nodes() { seq 1 "$KAFKA_NODES"; }

# A single node keeps the layout it always had (kafka/, logs/kafka-*); a cluster's node N has
# kafka/node-N/ and logs/kafka-N-*.
node_dir() {
    if ((KAFKA_NODES == 1)); then echo "$KAFKA_DIR"; else echo "$KAFKA_DIR/node-$1"; fi
}
node_log() {
    if ((KAFKA_NODES == 1)); then echo "$LOG_DIR/kafka$2"; else echo "$LOG_DIR/kafka-$1$2"; fi
}
node_name() {
    if ((KAFKA_NODES == 1)); then echo "Kafka"; else echo "Kafka node $1"; fi
}
node_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }
node_pid_file() { echo "$(node_dir "$1")/kafka.pid"; }

kafka_bootstrap() {
    local n servers=()
    for n in $(kafka_nodes); do servers+=("127.0.0.1:$(node_port "$n")"); done
    (IFS=,; echo "${servers[*]}")
}

kafka_pid() {
    # Only trust the pid file if that pid is still our broker (pids get reused).
    local pid_file pid
    pid_file="$(node_pid_file "$1")"
    [[ -f $pid_file ]] || return 1
    pid="$(cat "$pid_file")"
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

# Sends an ApiVersions v0 request to node $1 and checks for error_code 0: proves the broker
# is serving requests, not merely that the port is bound. Pure bash, no client needed.
kafka_answers() {
    local reply port
    port="$(node_port "$1")"
    reply="$(
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        # size=12 | api_key=18 | api_version=0 | correlation_id=1 | client_id="rx"
        printf '\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02rx' >&3
        timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n'
    )" 2>/dev/null || return 1
    # bytes 4-9: correlation_id=1, error_code=0
    [[ ${reply:8:12} == 000000010000 ]]
}

fetch_kafka() {
    [[ -f $KAFKA_LIBS/.complete ]] && return 0
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    maven_runtime "$KAFKA_HOME" "Kafka $KAFKA_VERSION" "\
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>"
}

# principal=password lines, one per Kafka principal (admin, the services, `controller` for the
# controller listener), made once per state dir, readable by its owner only.
make_kafka_credentials() {
    [[ -f $KAFKA_CREDENTIALS ]] && return 0
    mkdir -p "$KAFKA_DIR"
    local name
    (
        umask 077
        for name in admin controller "${KAFKA_SERVICES[@]}"; do
            printf '%s=%s\n' "$name" "$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
        done >"$KAFKA_CREDENTIALS.tmp"
    )
    mv "$KAFKA_CREDENTIALS.tmp" "$KAFKA_CREDENTIALS"
}

kafka_password() {
    sed -n "s/^$1=//p" "$KAFKA_CREDENTIALS"
}

# The exports a client needs: where the brokers are, how to authenticate, every local
# principal's password (each service picks its own: reflexe_common.kafka), and how many copies
# of each topic the platform makes (reflexe_common.topics).
kafka_env() {
    echo "export KAFKA_BOOTSTRAP=$(kafka_bootstrap)"
    echo "export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"
    echo "export KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
    echo "export KAFKA_TOPIC_REPLICATION_FACTOR=$KAFKA_REPLICATION"
    echo "export KAFKA_TOPIC_MIN_INSYNC_REPLICAS=$KAFKA_MIN_INSYNC"
    [[ -f $KAFKA_CREDENTIALS ]] || return 0
    local name
    for name in admin "${KAFKA_SERVICES[@]}"; do
        echo "export REFLEXE_KAFKA_${name^^}_PASSWORD=$(kafka_password "$name")"
    done
}

write_kafka_config() {
    local node=$1 dir voters=() n
    dir="$(node_dir "$node")"
    mkdir -p "$dir/data" "$LOG_DIR"
    for n in $(kafka_nodes); do voters+=("$n@127.0.0.1:$(node_controller_port "$n")"); done
    local admin_password controller_password port controller_port
    admin_password="$(kafka_password admin)"
    controller_password="$(kafka_password controller)"
    port="$(node_port "$node")"
    controller_port="$(node_controller_port "$node")"
    # Rewritten on every start so that port changes take effect. A static voter list
    # (rather than --standalone's dynamic quorum) keeps no endpoint in the metadata log,
    # so the controller ports can change between runs of the same state dir.
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$(IFS=,; echo "${voters[*]}")
listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
# Brokers replicate to each other over the client listener, authenticated like any client
# (as the super user admin).
inter.broker.listener.name=SASL_PLAINTEXT
# Clients: SCRAM-SHA-512 without TLS, acceptable on loopback only (production: SASL_SSL).
# The controller listener cannot use SCRAM (its credentials live in the metadata it serves), so
# it takes SASL PLAIN with one static user, rather than PLAINTEXT's anonymous super user.
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="$controller_password" user_controller="$controller_password";
# Deny unless an ACL allows (ACLs: reflexe_common/kafka_acls.py).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
log.dirs=$dir/data
# Topics are created explicitly by the platform; a typo must fail, not create a topic.
auto.create.topics.enable=false
num.partitions=1
# As many copies as the cluster allows, up to three, two in sync (one on a single node): the
# platform's topics (KAFKA_TOPIC_* from \`env\`) and the brokers' internal ones alike.
default.replication.factor=$KAFKA_REPLICATION
min.insync.replicas=$KAFKA_MIN_INSYNC
offsets.topic.replication.factor=$KAFKA_REPLICATION
transaction.state.log.replication.factor=$KAFKA_REPLICATION
transaction.state.log.min.isr=$KAFKA_MIN_INSYNC
share.coordinator.state.topic.replication.factor=$KAFKA_REPLICATION
share.coordinator.state.topic.min.isr=$KAFKA_MIN_INSYNC
# Fewer partitions than the default 50 make the internal topics' first creation and loading quicker.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
# Tests start consumers one by one; don't wait 3 s for more group members.
group.initial.rebalance.delay.ms=0
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $(node_log "$node" -server.log)
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
# INFO here gives the "Kafka Server started" line that await_kafka_nodes waits for.
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.kafka.name = kafka.Kafka
logger.kafka.level = INFO
# Refused operations (an ACL missing, or a client overstepping) are logged at INFO.
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
logger.authorizer.additivity = false
logger.authorizer.appenderRef.file.ref = authorizer
appender.authorizer.type = File
appender.authorizer.name = authorizer
appender.authorizer.fileName = $(node_log "$node" -authorizer.log)
appender.authorizer.layout.type = PatternLayout
appender.authorizer.layout.pattern = [%d] %p %m%n
EOF
    chmod 600 "$dir/server.properties"
}

# The services' principals and their ACLs, from the one declaration in code (kafka_acls.py).
apply_kafka_acls() {
    local python="${REFLEXE_PYTHON:-$REPO_ROOT/.venv/bin/python}"
    [[ -x $python ]] || die "no Python environment at $python to apply the Kafka ACLs with (./reflexe test or ./reflexe up installs it; or set REFLEXE_PYTHON)"
    log "applying the Kafka principals and ACLs"
    ( eval "$(kafka_env)"; "$python" -m reflexe_common.kafka_acls apply ) >"$LOG_DIR/kafka-acls.log" 2>&1 \
        || { cat "$LOG_DIR/kafka-acls.log" >&2; die "applying the Kafka ACLs failed"; }
}

# A state dir's Kafka keeps the node count it was made with: a node's data names the voters
# it was formatted among.
check_kafka_node_count() {
    if [[ -n ${REFLEXE_KAFKA_NODES:-} && -n $KAFKA_NODES_RECORDED && $REFLEXE_KAFKA_NODES != "$KAFKA_NODES_RECORDED" ]]; then
        die "the Kafka in $STATE_DIR has $KAFKA_NODES_RECORDED node(s), not $REFLEXE_KAFKA_NODES; delete it with '$0 clean' or use another REFLEXE_STATE_DIR"
    fi
}

# Formats the storage of the given nodes that have none yet, side by side (one JVM each).
format_kafka_nodes() {
    local n dir pids=() failed=()
    for n in "$@"; do
        dir="$(node_dir "$n")"
        [[ -f $dir/data/meta.properties ]] && continue
        log "formatting $(node_name "$n") storage"
        # The super user's SCRAM credential goes into the first metadata: nobody could create it
        # over an authenticated listener before it exists.
        "${KAFKA_JAVA[@]}" "-Dlog4j2.configurationFile=file:$dir/log4j2.properties" \
            kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$dir/server.properties" \
            --add-scram "SCRAM-SHA-512=[name=admin,password=$(kafka_password admin)]" \
            >"$(node_log "$n" -format.log)" 2>&1 &
        pids[n]=$!
    done
    for n in "${!pids[@]}"; do
        wait "${pids[n]}" || { cat "$(node_log "$n" -format.log)" >&2; failed+=("$n"); }
    done
    ((${#failed[@]} == 0)) || die "Kafka storage format failed (node ${failed[*]})"
}

declare -A KAFKA_LOG_OFFSET=()

launch_kafka_node() {
    local node=$1 dir server_log
    dir="$(node_dir "$node")"
    server_log="$(node_log "$node" -server.log)"
    KAFKA_LOG_OFFSET[$node]=0
    [[ -f $server_log ]] && KAFKA_LOG_OFFSET[$node]="$(stat -c %s "$server_log")"
    log "starting $(node_name "$node") on 127.0.0.1:$(node_port "$node") (Kafka $KAFKA_VERSION)"
    # setsid + closed stdio: the broker must outlive this script and must not hold the
    # caller's pipes open (a subprocess.run(capture_output=True) would hang otherwise).
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$(node_pid_file "$node")" \
        "${KAFKA_JAVA[@]}" "-Dlog4j2.configurationFile=file:$dir/log4j2.properties" \
        kafka.Kafka "$dir/server.properties" </dev/null >>"$(node_log "$node" .out)" 2>&1 &
}

# Waits for the nodes just launched: "Kafka Server started" is logged only once a broker is
# unfenced and serving, which on a cluster needs a quorum of controllers up.
await_kafka_nodes() {
    local launched=$SECONDS deadline=$((SECONDS + 120)) n server_log waiting=("$@")
    while ((${#waiting[@]})); do
        local still=()
        for n in "${waiting[@]}"; do
            server_log="$(node_log "$n" -server.log)"
            if [[ -f $server_log ]] && tail -c "+$((KAFKA_LOG_OFFSET[$n] + 1))" "$server_log" | grep -q 'Kafka Server started'; then
                continue
            fi
            if ((SECONDS - launched >= 2)) && ! kafka_pid "$n" >/dev/null; then
                tail -n 30 "$(node_log "$n" .out)" "$server_log" >&2 2>/dev/null || true
                stop_kafka_nodes "$@"
                die "$(node_name "$n") exited during startup (logs in $LOG_DIR)"
            fi
            still+=("$n")
        done
        waiting=("${still[@]}")
        ((${#waiting[@]})) || break
        if ((SECONDS >= deadline)); then
            stop_kafka_nodes "$@" # a retry then starts afresh instead of adopting a stuck broker
            die "Kafka did not start within 120 s (node ${waiting[*]}; logs in $LOG_DIR)"
        fi
        sleep 0.5
    done
    for n in "$@"; do
        wait_for_kafka "$n" 30 || die "$(node_name "$n") started but does not answer on 127.0.0.1:$(node_port "$n")"
    done
}

# Starts the given nodes (not running): config, storage, launch side by side, wait for all.
start_kafka_nodes() {
    local n
    for n in "$@"; do
        port_open "$(node_port "$n")" && die "port $(node_port "$n") is already used by another process"
        port_open "$(node_controller_port "$n")" && die "port $(node_controller_port "$n") is already used by another process"
    done
    fetch_kafka
    for n in "$@"; do
        if [[ -f $(node_dir "$n")/data/meta.properties && ! -f $KAFKA_CREDENTIALS ]]; then
            die "the Kafka data in $(node_dir "$n") predates authentication (no admin credential in it); delete it with: $0 clean"
        fi
    done
    make_kafka_credentials
    echo "$KAFKA_NODES" >"$KAFKA_NODES_FILE"
    KAFKA_NODES_RECORDED=$KAFKA_NODES
    for n in "$@"; do write_kafka_config "$n"; done
    format_kafka_nodes "$@"
    for n in "$@"; do launch_kafka_node "$n"; done
    await_kafka_nodes "$@"
}

start_kafka() {
    local n stopped=()
    for n in $(kafka_nodes); do
        kafka_pid "$n" >/dev/null || stopped+=("$n")
    done
    if ((${#stopped[@]})); then
        start_kafka_nodes "${stopped[@]}"
    else
        for n in $(kafka_nodes); do
            wait_for_kafka "$n" 30 || die "$(node_name "$n") runs (pid $(kafka_pid "$n")) but does not answer on 127.0.0.1:$(node_port "$n")"
        done
        log "Kafka already running on $(kafka_bootstrap)"
    fi
    apply_kafka_acls
}

wait_for_kafka() { wait_until "$2" 0.5 kafka_answers "$1"; }

# Stops the given nodes side by side: one by one, the last nodes of a cluster would each wait
# for a controller quorum already gone before their controlled shutdown.
stop_kafka_nodes() {
    local n pid pids=()
    for n in "$@"; do
        pid="$(kafka_pid "$n")" || { rm -f "$(node_pid_file "$n")"; continue; }
        log "stopping $(node_name "$n") (pid $pid)"
        # SIGTERM runs a controlled shutdown that flushes logs, so the next start skips recovery.
        kill -TERM "$pid" 2>/dev/null || true
        pids[n]=$pid
    done
    local deadline=$((SECONDS + 60))
    for n in "${!pids[@]}"; do
        await_exit_or_kill "$deadline" "$(node_name "$n")" "${pids[n]}"
        rm -f "$(node_pid_file "$n")"
    done
}

stop_kafka() {
    # shellcheck disable=SC2046 # one word per node number
    stop_kafka_nodes $(kafka_nodes)
}

# The node number given to kafka-kill/kafka-start, checked against the state dir's cluster.
node_argument() {
    [[ ${1:-} =~ ^[1-9][0-9]*$ ]] && (($1 <= KAFKA_NODES)) \
        || die "usage: $0 kafka-kill|kafka-start N, N a node from 1 to $KAFKA_NODES"
    echo "$1"
}

# kill -9: a crash, no controlled shutdown; the other nodes elect new leaders and shrink the ISRs.
kill_kafka_node() {
    local node pid
    node="$(node_argument "${1:-}")"
    if ! pid="$(kafka_pid "$node")"; then
        log "$(node_name "$node") is not running"
        return 0
    fi
    log "killing $(node_name "$node") (pid $pid) with SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 30 0.1 process_gone "$pid" || die "$(node_name "$node") (pid $pid) survived SIGKILL for 30 s"
    rm -f "$(node_pid_file "$node")"
}

start_kafka_node() {
    local node
    node="$(node_argument "${1:-}")"
    [[ -n $KAFKA_NODES_RECORDED ]] || die "no Kafka in $STATE_DIR yet; start it with: $0 start"
    if kafka_pid "$node" >/dev/null; then
        wait_for_kafka "$node" 30 || die "$(node_name "$node") runs (pid $(kafka_pid "$node")) but does not answer on 127.0.0.1:$(node_port "$node")"
        log "$(node_name "$node") already running on 127.0.0.1:$(node_port "$node")"
        return 0
    fi
    start_kafka_nodes "$node"
}

# ---------------------------------------------------------------- PostgreSQL

newest_pg_bin() {
    local dirs=(/usr/lib/postgresql/*/bin)
    [[ -d ${dirs[0]} ]] || return 1
    printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1
}

pg_bin() {
    newest_pg_bin || { apt_install postgresql && newest_pg_bin; } \
        || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
}

# initdb refuses to run as root: as root, PostgreSQL runs as the 'postgres' OS user.
as_pg() {
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_running() {
    [[ -f $PGDATA/PG_VERSION ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

psql_admin() {
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d postgres
}

# As root: the cluster's directory outside the state dir, where the postgres user can reach it.
# /var/tmp is world-writable, so its base must be root's own real directory (no symlink planted
# by another user), and each cluster's directory the postgres user's, private.
make_shared_pg_root() {
    id postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home postgres
    [[ -L $PG_SHARED_BASE ]] && die "$PG_SHARED_BASE is a symbolic link; remove it"
    mkdir -p -m 0755 "$PG_SHARED_BASE"
    [[ "$(stat -c %u "$PG_SHARED_BASE")" == 0 ]] || die "$PG_SHARED_BASE is not owned by root; remove it"
    chmod 0755 "$PG_SHARED_BASE"
    [[ -L $PG_ROOT ]] && die "$PG_ROOT is a symbolic link; remove it"
    mkdir -p "$PG_ROOT"
    chown postgres: "$PG_ROOT"
    chmod 0700 "$PG_ROOT"
    # So that the state dir shows where the cluster is.
    [[ -e $STATE_DIR/postgres && ! -L $STATE_DIR/postgres ]] || ln -sfn "$PG_ROOT" "$STATE_DIR/postgres"
}

init_pg() {
    if is_root; then
        make_shared_pg_root
        runuser -u postgres -- test -w "$PG_ROOT" || die "user postgres cannot write to $PG_ROOT"
    else
        mkdir -p "$PG_ROOT"
    fi
    as_pg mkdir -p "$PG_SOCKET_DIR"
    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        log "initialising PostgreSQL cluster in $PGDATA"
        # Unix socket: trust (admin tasks below). TCP: password (scram) only.
        as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$PG_ROOT/initdb.log" 2>&1 \
            || { cat "$PG_ROOT/initdb.log" >&2; die "initdb failed"; }
        echo "include_if_exists = 'reflexe.conf'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
    fi
    # Rewritten on every start so that port/path changes take effect.
    # fsync/synchronous_commit/full_page_writes off: this is a throwaway dev/test
    # cluster; speed matters, and losing it in an OS crash is acceptable. With
    # REFLEXE_PG_DURABLE=1 they are on, as in production: a commit survives a crash of
    # PostgreSQL (pg-restart), which the chaos run relies on.
    local durable=off
    [[ ${REFLEXE_PG_DURABLE:-0} == 1 ]] && durable=on
    as_pg tee "$PGDATA/reflexe.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
fsync = $durable
synchronous_commit = $durable
full_page_writes = $durable
EOF
}

start_pg() {
    PGBIN="$(pg_bin)"
    if pg_running; then
        log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    else
        port_open "$PG_PORT" && die "port $PG_PORT is already used by another process"
        init_pg
        log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
            || { tail -n 30 "$PG_LOG" >&2 || true; die "PostgreSQL did not start (log: $PG_LOG)"; }
    fi
    psql_admin <<'SQL'
SELECT 'CREATE ROLE reflexe LOGIN CREATEDB PASSWORD ''reflexe'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reflexe') \gexec
SELECT 'CREATE DATABASE reflexe OWNER reflexe'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'reflexe') \gexec
SQL
}

stop_pg() {
    PGBIN="$(pg_bin)"
    pg_running || return 0
    log "stopping PostgreSQL"
    # Bounded: a fast stop waits for no client; if even that stalls, stop without a checkpoint.
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null \
        || as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null
}

# A crash and a restart: the immediate mode aborts every session without a checkpoint, so the start
# replays the WAL as after a power cut (the chaos run's PostgreSQL fault).
restart_pg() {
    PGBIN="$(pg_bin)"
    pg_running || die "PostgreSQL is not running; start it with: $0 start"
    log "crashing PostgreSQL (immediate stop)"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
        || { tail -n 30 "$PG_LOG" >&2 || true; die "PostgreSQL did not start again (log: $PG_LOG)"; }
}

pg_root_outside_state_dir() { [[ $PG_ROOT != "$STATE_DIR"/* ]]; }

# ---------------------------------------------------------------- commands

print_env() {
    kafka_env
    echo "export DATABASE_URL=postgresql://reflexe:reflexe@127.0.0.1:$PG_PORT/reflexe"
}

cmd_start() {
    mkdir -p "$STATE_DIR" "$LOG_DIR"
    # A new state dir starts afresh: a cluster left outside it by an earlier state dir of the
    # same path (deleted without clean) is not its own.
    if [[ ! -f $STATE_MARKER ]] && pg_root_outside_state_dir && [[ -d $PG_ROOT ]]; then
        stop_pg
        rm -rf "$PG_ROOT"
    fi
    touch "$STATE_MARKER"
    check_kafka_node_count
    # PostgreSQL first: it is fast, and its own failure messages are clearer.
    start_pg
    start_kafka
    print_env
}

cmd_stop() {
    stop_kafka
    stop_pg
}

cmd_clean() {
    cmd_stop
    if pg_root_outside_state_dir && [[ -d $PG_ROOT ]]; then
        log "deleting $PG_ROOT"
        rm -rf "$PG_ROOT"
    fi
    [[ -d $STATE_DIR ]] || return 0
    # Guard against a mistyped REFLEXE_STATE_DIR wiping an unrelated directory.
    if [[ ! -f $STATE_MARKER && -n "$(ls -A "$STATE_DIR")" ]]; then
        die "$STATE_DIR does not look like an infra state dir (no .reflexe-infra); not deleting it"
    fi
    log "deleting $STATE_DIR"
    rm -rf "$STATE_DIR"
}

cmd_status() {
    local rc=0 pid n label
    for n in $(kafka_nodes); do
        if ((KAFKA_NODES == 1)); then label="kafka:"; else label="kafka-$n:"; fi
        if pid="$(kafka_pid "$n")"; then
            if kafka_answers "$n"; then
                printf '%-12srunning (pid %s) on 127.0.0.1:%s\n' "$label" "$pid" "$(node_port "$n")"
            else
                printf '%-12sprocess %s alive but not answering on 127.0.0.1:%s\n' "$label" "$pid" "$(node_port "$n")"; rc=3
            fi
        else
            printf '%-12sstopped\n' "$label"; rc=3
        fi
    done
    PGBIN="$(pg_bin)"
    if pg_running; then
        echo "postgresql: running (pid $(head -n 1 "$PGDATA/postmaster.pid")) on 127.0.0.1:$PG_PORT"
    else
        echo "postgresql: stopped"; rc=3
    fi
    echo "state dir:  $STATE_DIR"
    echo "pg dir:     $PG_ROOT"
    return "$rc"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    status) cmd_status ;;
    env) print_env ;;
    kafka-kill) kill_kafka_node "${2:-}" ;;
    kafka-start) start_kafka_node "${2:-}" ;;
    pg-restart) restart_pg ;;
    *)
        echo "usage: $0 start|stop|clean|status|env|kafka-kill N|kafka-start N|pg-restart" >&2
        exit 2
        ;;
esac
