#!/usr/bin/env bash
# Runs the Kubernetes shape on one machine: a three-node NATS JetStream cluster, a
# database, and each of the four service programs as its own processes, in replicas, on
# loopback ports. Everything runs in the background; `cluster.sh down` stops exactly what
# `up` started (by pid and process start time) and nothing else.
#
# Usage:
#   deploy/local/cluster.sh [up] [--replicas N] [--release] [--tls]
#   deploy/local/cluster.sh status
#   deploy/local/cluster.sh down
#
#   --replicas N  processes per service (default 2, at most 9)
#   --release     build and run release binaries (default: debug, quicker to build)
#   --tls         a private PostgreSQL server (initdb, as the postgres user, on its own
#                 port) that accepts only TLS, with a throwaway CA and server certificate
#                 made here; DATABASE_URL uses sslmode=verify-full. Without it: a fresh
#                 database on the local PostgreSQL (or DATABASE_URL's server).
#
# Every `up` starts fresh: new NATS stores, a new database. State, logs and pid files
# live in CLUSTER_DIR (default target/cluster). Ports: NATS clients CLUSTER_NATS_PORT
# (default 4301, 4302, 4303; routes +2000, monitoring +4000); gRPC CLUSTER_GRPC_PORT
# (default 50061: customer-service 50061.., device-service 50071.., msp-link-service
# 50081.., reporting-service 50091..); TLS PostgreSQL the first free port from
# CLUSTER_PG_PORT (default 5442); metrics (METRICS_ADDR, http://…/metrics)
# CLUSTER_METRICS_PORT (default 9161: customer-service 9161.., device-service 9171..,
# msp-link-service 9181.., reporting-service 9191..), listed for
# deploy/local/prometheus.sh in CLUSTER_DIR/metrics-targets.
# Honours DATABASE_URL, AUTH_JWT_SECRET, RUST_LOG, LOG_FORMAT, DATABASE_MAX_CONNECTIONS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

STATE=${CLUSTER_DIR:-target/cluster}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
NATS_PORT=${CLUSTER_NATS_PORT:-4301}
GRPC_PORT=${CLUSTER_GRPC_PORT:-50061}
METRICS_PORT=${CLUSTER_METRICS_PORT:-9161}
PG_PORT=${CLUSTER_PG_PORT:-5442}
NATS_NODES=3
SERVICES=(customer-service device-service msp-link-service reporting-service)
HEALTH_NAMES=(reseller.v1.CustomerService reseller.v1.DeviceService reseller.v1.MspService reseller.v1.ReportingService)
DB_NAME=${CLUSTER_DB_NAME:-reseller_cluster}

# ---------------------------------------------------------------------------
# Processes: each started one is recorded as "PID STARTTIME" in $STATE/pids/NAME.pid.
# The start time (field 22 of /proc/PID/stat, in clock ticks since boot) tells our
# process from a later one that reused its pid.

start_time() {
    # Fields after the ")" that ends the command name (which may hold spaces): the
    # start time is the 20th of them.
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $stat
    printf '%s\n' "${20}"
}

# pid_of NAME: the recorded pid if that process still runs, else nothing (status 1).
pid_of() {
    local file="$STATE/pids/$1.pid" pid started now
    [ -f "$file" ] || return 1
    read -r pid started <"$file" || return 1
    now=$(start_time "$pid") || return 1
    [ "$now" = "$started" ] || return 1
    printf '%s\n' "$pid"
}

# launch NAME LOG COMMAND...: starts COMMAND in its own session (a closed terminal or a
# Ctrl-C after `up` does not reach it), output to LOG, and records it.
launch() {
    local name=$1 logfile=$2
    shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    local pid=$!
    printf '%s %s\n' "$pid" "$(start_time "$pid")" >"$STATE/pids/$name.pid"
}

# stop_all: SIGTERM to every recorded process that still runs (services first, so they
# drain while NATS and PostgreSQL are still there), wait, SIGKILL what outlives 30 s.
stop_all() {
    local group name pid waited
    [ -d "$STATE/pids" ] || return 0
    for group in service nats; do
        local pids=()
        for file in "$STATE"/pids/*.pid; do
            [ -e "$file" ] || continue
            name=$(basename "$file" .pid)
            case "$group:$name" in
            service:nats-*) continue ;;
            nats:nats-*) ;;
            nats:*) continue ;;
            esac
            if pid=$(pid_of "$name"); then
                log "stopping $name (pid $pid)"
                kill -TERM "$pid" 2>/dev/null || true
                pids+=("$name:$pid")
            fi
            rm -f "$file"
        done
        waited=0
        for entry in "${pids[@]}"; do
            pid=${entry#*:}
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
                sleep 0.2
                waited=$((waited + 1))
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "${entry%%:*} did not stop within 30 s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
    done
    if [ -f "$STATE/pg/data/postmaster.pid" ]; then
        log "stopping the private PostgreSQL"
        _as_postgres "$(pg_bin_dir)/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >&2 || true
    fi
}

running_any() {
    local file
    for file in "$STATE"/pids/*.pid; do
        [ -e "$file" ] || continue
        pid_of "$(basename "$file" .pid)" >/dev/null && return 0
    done
    [ -f "$STATE/pg/data/postmaster.pid" ] && return 0
    return 1
}

# ---------------------------------------------------------------------------
# Health: grpc.health.v1 Check over HTTP/2 with curl (a gRPC frame by hand: no grpcurl
# needed). Prints the status number: 1 SERVING, 2 NOT_SERVING, 0 or nothing otherwise.
grpc_health() {
    local port=$1 name=$2 len hex
    len=${#name}
    # 5-byte frame header (uncompressed, length), then field 1 (string): 0x0a LEN NAME.
    # shellcheck disable=SC2059 # the format is built on purpose
    hex=$(printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((len + 2)))\\x0a\\x$(printf %02x "$len")%s" "$name" |
        curl -sS --http2-prior-knowledge --max-time 2 \
            -H 'content-type: application/grpc' -H 'te: trailers' \
            --data-binary @- "http://127.0.0.1:$port/grpc.health.v1.Health/Check" 2>/dev/null |
        od -An -tx1 | tr -d ' \n') || true
    case "$hex" in
    *0801) echo 1 ;;
    *0802) echo 2 ;;
    *) echo 0 ;;
    esac
}

serving() {
    if command -v curl >/dev/null 2>&1; then
        [ "$(grpc_health "$1" "$2")" = 1 ]
    else
        port_open 127.0.0.1 "$1"
    fi
}

# ---------------------------------------------------------------------------
# Ports and names

service_port() { # SERVICE_INDEX REPLICA_INDEX
    printf '%s\n' $((GRPC_PORT + 10 * $1 + $2))
}
metrics_port() { # SERVICE_INDEX REPLICA_INDEX
    printf '%s\n' $((METRICS_PORT + 10 * $1 + $2))
}
nats_client_port() { printf '%s\n' $((NATS_PORT + $1)); }
nats_route_port() { printf '%s\n' $((NATS_PORT + 2000 + $1)); }
nats_monitor_port() { printf '%s\n' $((NATS_PORT + 4000 + $1)); }

nats_url_list() {
    local i urls=()
    for ((i = 0; i < NATS_NODES; i++)); do
        urls+=("nats://127.0.0.1:$(nats_client_port "$i")")
    done
    (
        IFS=,
        printf '%s\n' "${urls[*]}"
    )
}

find_nats_server() {
    local bin
    bin=$(command -v nats-server 2>/dev/null || true)
    [ -z "$bin" ] && [ -x /usr/sbin/nats-server ] && bin=/usr/sbin/nats-server
    if [ -z "$bin" ]; then
        apt_install nats-server
        bin=$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)
    fi
    [ -x "$bin" ] || die "nats-server not found"
    printf '%s\n' "$bin"
}

pg_bin_dir() {
    local version
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return
    fi
    # shellcheck disable=SC2012 # plain version directory names
    version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
    [ -n "$version" ] || return 1
    printf '%s\n' "/usr/lib/postgresql/$version/bin"
}

# with_param URL KEY=VALUE: URL with one more query parameter.
with_param() {
    case "$1" in
    *\?*) printf '%s&%s\n' "$1" "$2" ;;
    *) printf '%s?%s\n' "$1" "$2" ;;
    esac
}

# ---------------------------------------------------------------------------
# Parts

start_nats() {
    local bin i routes j
    bin=$(find_nats_server)
    for ((i = 0; i < NATS_NODES; i++)); do
        routes=()
        for ((j = 0; j < NATS_NODES; j++)); do
            [ "$j" -eq "$i" ] || routes+=("nats://127.0.0.1:$(nats_route_port "$j")")
        done
        mkdir -p "$STATE/nats/$i"
        launch "nats-$i" "$STATE/logs/nats-$i.log" "$bin" \
            -a 127.0.0.1 -p "$(nats_client_port "$i")" -n "nats-$i" \
            -js -sd "$STATE/nats/$i" -m "$(nats_monitor_port "$i")" \
            --cluster_name reseller-local --cluster "nats://127.0.0.1:$(nats_route_port "$i")" \
            --routes "$(
                IFS=,
                printf '%s' "${routes[*]}"
            )"
    done
    for ((i = 0; i < NATS_NODES; i++)); do
        wait_for "NATS node nats-$i (see $STATE/logs/nats-$i.log)" 30 \
            port_open 127.0.0.1 "$(nats_client_port "$i")"
    done
    # JetStream answers once the cluster has elected its meta leader; the services retry
    # their set-up until then anyway, this only makes `up` report it.
    if command -v curl >/dev/null 2>&1; then
        for ((i = 0; i < NATS_NODES; i++)); do
            wait_for "JetStream on nats-$i" 60 \
                curl -fsS "http://127.0.0.1:$(nats_monitor_port "$i")/healthz?js-enabled-only=true"
        done
    fi
}

# A fresh database on the local PostgreSQL (or DATABASE_URL's server).
start_plain_database() {
    ensure_postgres
    log "PostgreSQL: recreating database $DB_NAME"
    psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -v name="$DB_NAME" >&2 <<'SQL'
drop database if exists :"name" with (force)
SQL
    create_database "$DB_NAME"
    DATABASE_URL=$(db_url_with_name "$DATABASE_URL" "$DB_NAME")
}

# A private PostgreSQL that accepts only TLS, with a CA made here.
start_tls_database() {
    local bin pg password
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    bin=$(pg_bin_dir) || true
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        apt_install postgresql
        bin=$(pg_bin_dir) || die "initdb not found after installing PostgreSQL"
    fi
    # The first free port from CLUSTER_PG_PORT (default 5442) on.
    while port_open 127.0.0.1 "$PG_PORT"; do
        PG_PORT=$((PG_PORT + 1))
    done
    printf 'pg_port=%s\n' "$PG_PORT" >>"$STATE/cluster.conf"
    pg=$STATE/pg
    mkdir -p "$STATE/tls" "$pg"
    log "TLS: making a throwaway CA and a server certificate for localhost and 127.0.0.1"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=reseller cluster.sh CA" \
        -keyout "$STATE/tls/ca.key" -out "$STATE/tls/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$pg/server.key" -out "$STATE/tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$STATE/tls/san.ext"
    openssl x509 -req -in "$STATE/tls/server.csr" -CA "$STATE/tls/ca.crt" -CAkey "$STATE/tls/ca.key" \
        -CAcreateserial -days 30 -extfile "$STATE/tls/san.ext" -out "$pg/server.crt" 2>/dev/null
    password=$(openssl rand -hex 16)
    printf '%s\n' "$password" >"$pg/password"
    chmod 600 "$pg/server.key" "$pg/password"
    # PostgreSQL runs as the postgres user, which must own its directory.
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$pg"
        # ...and reach it: every directory above must let others through.
        local up=$pg
        while [ "$up" != / ]; do
            up=$(dirname "$up")
            [ -x "$up" ] || die "$up is not traversable by the postgres user"
            chmod o+x "$up" 2>/dev/null || true
        done
    fi
    log "PostgreSQL (TLS): initdb in $pg/data"
    _as_postgres "$bin/initdb" -D "$pg/data" -U postgres -E UTF8 --no-locale \
        --auth-local=peer --auth-host=scram-sha-256 --pwfile="$pg/password" \
        >"$STATE/logs/initdb.log" 2>&1 || die "initdb failed; see $STATE/logs/initdb.log"
    _as_postgres sh -c "cat >>'$pg/data/postgresql.conf'" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg'
ssl = on
ssl_cert_file = '$pg/server.crt'
ssl_key_file = '$pg/server.key'
max_connections = 200
EOF
    # Only TLS over TCP: no plain `host` line.
    _as_postgres sh -c "cat >'$pg/data/pg_hba.conf'" <<'EOF'
local   all all                peer
hostssl all all 127.0.0.1/32   scram-sha-256
EOF
    _as_postgres "$bin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -t 60 start >/dev/null ||
        die "PostgreSQL did not start; see $pg/server.log"
    local base="postgres://postgres:$password@127.0.0.1:$PG_PORT"
    local tls="sslmode=verify-full&sslrootcert=$STATE/tls/ca.crt"
    psql "$base/postgres?$tls" -X -q -v ON_ERROR_STOP=1 -c "create database $DB_NAME" >&2
    DATABASE_URL="$base/$DB_NAME?$tls"
    log "PostgreSQL (TLS): ready on 127.0.0.1:$PG_PORT, server log $pg/server.log"
}

start_services() {
    local bin_dir=$1 s i name port customer_url url
    for s in "${!SERVICES[@]}"; do
        for ((i = 0; i < REPLICAS; i++)); do
            name="${SERVICES[$s]}-$i"
            port=$(service_port "$s" "$i")
            # No load balancer on one machine: replica i of device-service and
            # msp-link-service asks customer-service replica i.
            customer_url="http://127.0.0.1:$(service_port 0 "$i")"
            url=$(with_param "$DATABASE_URL" "application_name=$name")
            # What deploy/local/prometheus.sh cluster scrapes: program, replica, address.
            printf '%s %s 127.0.0.1:%s\n' "${SERVICES[$s]}" "$name" "$(metrics_port "$s" "$i")" \
                >>"$STATE/metrics-targets"
            launch "$name" "$STATE/logs/$name.log" env \
                DATABASE_URL="$url" \
                NATS_URL="$(nats_url_list)" \
                NATS_STREAM_REPLICAS=3 \
                GRPC_ADDR="127.0.0.1:$port" \
                METRICS_ADDR="127.0.0.1:$(metrics_port "$s" "$i")" \
                AUTH_JWT_SECRET="$AUTH_JWT_SECRET" \
                CUSTOMER_SERVICE_URL="$customer_url" \
                DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-8}" \
                SHUTDOWN_GRACE_SECONDS="${SHUTDOWN_GRACE_SECONDS:-10}" \
                RUST_LOG="${RUST_LOG:-info}" \
                LOG_FORMAT="${LOG_FORMAT:-text}" \
                "$bin_dir/${SERVICES[$s]}"
        done
    done
    for s in "${!SERVICES[@]}"; do
        for ((i = 0; i < REPLICAS; i++)); do
            name="${SERVICES[$s]}-$i"
            port=$(service_port "$s" "$i")
            local deadline=$((SECONDS + 120))
            until serving "$port" "${HEALTH_NAMES[$s]}"; do
                if ! pid_of "$name" >/dev/null; then
                    tail -n 20 "$STATE/logs/$name.log" >&2 || true
                    die "$name exited while starting (log: $STATE/logs/$name.log)"
                fi
                if [ "$SECONDS" -ge "$deadline" ]; then
                    tail -n 20 "$STATE/logs/$name.log" >&2 || true
                    die "$name is not SERVING after 120 s (log: $STATE/logs/$name.log)"
                fi
                sleep 0.2
            done
        done
    done
}

# Whatever made `up` fail (a `die`, a failed command), what it started is stopped.
on_failed_up() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        log "start-up failed: stopping what was started"
        stop_all
    fi
}

# Warns when the replicas' pools could take more connections than the server allows.
check_connection_budget() {
    local max per budget
    per=$((${DATABASE_MAX_CONNECTIONS:-8} + 3)) # the pool, the relay, its LISTEN, the probe
    budget=$((${#SERVICES[@]} * REPLICAS * per))
    max=$(psql "$DATABASE_URL" -X -q -A -t -c 'show max_connections' 2>/dev/null || echo 0)
    log "PostgreSQL connections: up to $budget (${#SERVICES[@]} services × $REPLICAS replicas × ($per)); the server allows ${max:-?}"
    if [ "${max:-0}" -gt 0 ] && [ "$budget" -gt "$max" ]; then
        log "WARNING: lower DATABASE_MAX_CONNECTIONS or --replicas, or raise the server's max_connections"
    fi
}

# ---------------------------------------------------------------------------
# Commands

cmd_up() {
    local profile=debug release=() tls=0
    REPLICAS=2
    while [ $# -gt 0 ]; do
        case "$1" in
        --replicas)
            REPLICAS=${2:?--replicas needs a number}
            shift 2
            ;;
        --replicas=*)
            REPLICAS=${1#*=}
            shift
            ;;
        --release)
            profile=release release=(--release)
            shift
            ;;
        --tls)
            tls=1
            shift
            ;;
        *) die "unknown argument: $1 (see the top of $0)" ;;
        esac
    done
    case "$REPLICAS" in
    [1-9]) ;;
    *) die "--replicas must be 1 to 9, got $REPLICAS" ;;
    esac
    case "${DATABASE_MAX_CONNECTIONS:-8}" in
    '' | *[!0-9]*) die "DATABASE_MAX_CONNECTIONS must be a number, got $DATABASE_MAX_CONNECTIONS" ;;
    esac
    running_any && die "a cluster from $STATE is running; run '$0 down' first"

    ensure_build_tools
    local s i p
    for ((i = 0; i < NATS_NODES; i++)); do
        for p in "$(nats_client_port "$i")" "$(nats_route_port "$i")" "$(nats_monitor_port "$i")"; do
            port_open 127.0.0.1 "$p" && die "port $p is taken (set CLUSTER_NATS_PORT)"
        done
    done
    for s in "${!SERVICES[@]}"; do
        for ((i = 0; i < REPLICAS; i++)); do
            p=$(service_port "$s" "$i")
            port_open 127.0.0.1 "$p" && die "port $p is taken (set CLUSTER_GRPC_PORT)"
            p=$(metrics_port "$s" "$i")
            port_open 127.0.0.1 "$p" && die "port $p is taken (set CLUSTER_METRICS_PORT)"
        done
    done

    log "building the service binaries ($profile)"
    cargo build "${release[@]}" -p customer-service -p device-service -p msp-link-service \
        -p reporting-service -p reseller-portal >&2
    local bin_dir="${CARGO_TARGET_DIR:-target}/$profile"
    bin_dir=$(cd "$bin_dir" && pwd)

    # Fresh state; whatever fails from here on stops what was started.
    rm -rf "$STATE"
    mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/nats"
    trap 'on_failed_up' EXIT
    printf 'replicas=%s\nprofile=%s\ntls=%s\n' "$REPLICAS" "$profile" "$tls" >"$STATE/cluster.conf"

    if [ "$tls" -eq 1 ]; then
        start_tls_database
    else
        start_plain_database
    fi
    check_connection_budget
    start_nats

    if [ -z "${AUTH_JWT_SECRET:-}" ]; then
        log "WARNING: AUTH_JWT_SECRET is not set; using the development secret 'dev-secret-change-me'"
        AUTH_JWT_SECRET=dev-secret-change-me
    fi
    log "starting ${#SERVICES[@]} services × $REPLICAS replicas"
    start_services "$bin_dir"
    trap - EXIT

    local portal="$bin_dir/reseller-portal" admin reseller customer
    admin=$(AUTH_JWT_SECRET=$AUTH_JWT_SECRET "$portal" dev-token --role admin --sub platform-admin)
    reseller=$(AUTH_JWT_SECRET=$AUTH_JWT_SECRET "$portal" dev-token --role reseller --sub demo-reseller)
    customer=$(AUTH_JWT_SECRET=$AUTH_JWT_SECRET "$portal" dev-token --role customer --sub 100000000001)
    {
        printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
        printf 'export NATS_URL=%q\n' "$(nats_url_list)"
        printf 'export AUTH_JWT_SECRET=%q\n' "$AUTH_JWT_SECRET"
        printf 'export ADMIN_TOKEN=%q\nexport RESELLER_TOKEN=%q\nexport CUSTOMER_TOKEN=%q\n' \
            "$admin" "$reseller" "$customer"
    } >"$STATE/env"

    # The commands printed name the variables, not their values.
    # shellcheck disable=SC2016
    {
        printf '\n==> cluster up (state, logs and pids in %s)\n' "$STATE"
        printf '    PostgreSQL  DATABASE_URL=%s\n' "$DATABASE_URL"
        printf '    NATS        NATS_URL=%s  NATS_STREAM_REPLICAS=3\n' "$(nats_url_list)"
        printf '                monitoring:'
        for ((i = 0; i < NATS_NODES; i++)); do printf ' http://127.0.0.1:%s/jsz' "$(nats_monitor_port "$i")"; done
        printf '\n'
        for s in "${!SERVICES[@]}"; do
            printf '    %-18s' "${SERVICES[$s]}"
            for ((i = 0; i < REPLICAS; i++)); do printf ' 127.0.0.1:%s' "$(service_port "$s" "$i")"; done
            printf '   (health name %s)\n' "${HEALTH_NAMES[$s]}"
            printf '    %-18s' "  metrics"
            for ((i = 0; i < REPLICAS; i++)); do printf ' 127.0.0.1:%s' "$(metrics_port "$s" "$i")"; done
            printf '\n'
        done
        printf '    (replica i of device-service and msp-link-service calls customer-service replica i)\n'
        printf '\n==> development tokens (HS256, AUTH_JWT_SECRET); also in %s/env\n' "$STATE"
        printf '    export ADMIN_TOKEN=%s\n' "$admin"
        printf '    export RESELLER_TOKEN=%s\n' "$reseller"
        printf '    export CUSTOMER_TOKEN=%s\n' "$customer"
        printf '\n==> try it (https://github.com/fullstorydev/grpcurl):\n'
        printf '    source %s/env\n' "$STATE"
        printf '    grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" \\\n'
        printf '        -d %s \\\n' "'{\"knox_id\":\"100000000001\",\"kind\":\"ACCOUNT_KIND_CUSTOMER\",\"company_name\":\"Acme GmbH\",\"country\":\"DE\"}'"
        printf '        127.0.0.1:%s reseller.v1.AccountService/RegisterAccount\n' "$(service_port 0 0)"
        printf '    grpcurl -plaintext -H "authorization: Bearer $RESELLER_TOKEN" -d %s \\\n' "'{\"page_size\": 20}'"
        printf '        127.0.0.1:%s reseller.v1.ReportingService/ListCustomers\n' "$(service_port 3 0)"
        printf '    resellerctl --addr 127.0.0.1:%s --token "$RESELLER_TOKEN" customers list\n' "$(service_port 3 0)"
        printf '\n==> metrics in Prometheus (another terminal): deploy/local/prometheus.sh cluster\n'
        printf '\n==> stop it: %s down\n' "$0"
    } >&2
}

cmd_status() {
    local file name pid state s i
    [ -f "$STATE/cluster.conf" ] || {
        log "no cluster state in $STATE"
        return 0
    }
    local replicas tls
    replicas=$(sed -n 's/^replicas=//p' "$STATE/cluster.conf")
    tls=$(sed -n 's/^tls=//p' "$STATE/cluster.conf")
    PG_PORT=$(sed -n 's/^pg_port=//p' "$STATE/cluster.conf")
    for file in "$STATE"/pids/*.pid; do
        [ -e "$file" ] || continue
        name=$(basename "$file" .pid)
        if pid=$(pid_of "$name"); then state="running (pid $pid)"; else state="stopped"; fi
        case "$name" in
        nats-*) ;;
        *)
            for s in "${!SERVICES[@]}"; do
                for ((i = 0; i < replicas; i++)); do
                    if [ "$name" = "${SERVICES[$s]}-$i" ]; then
                        case "$(grpc_health "$(service_port "$s" "$i")" "${HEALTH_NAMES[$s]}")" in
                        1) state="$state, SERVING on 127.0.0.1:$(service_port "$s" "$i")" ;;
                        2) state="$state, NOT_SERVING on 127.0.0.1:$(service_port "$s" "$i")" ;;
                        *) state="$state, not answering on 127.0.0.1:$(service_port "$s" "$i")" ;;
                        esac
                    fi
                done
            done
            ;;
        esac
        printf '%-22s %s\n' "$name" "$state"
    done
    if [ "${tls:-0}" -eq 1 ]; then
        if [ -f "$STATE/pg/data/postmaster.pid" ]; then
            printf '%-22s running on 127.0.0.1:%s (TLS)\n' postgres "$PG_PORT"
        else
            printf '%-22s stopped\n' postgres
        fi
    fi
}

cmd_down() {
    stop_all
    log "stopped; state and logs stay in $STATE (the next 'up' starts fresh)"
}

command=${1:-up}
case "$command" in
up)
    shift || true
    cmd_up "$@"
    ;;
down) cmd_down ;;
status) cmd_status ;;
-h | --help | help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' ;;
--*) cmd_up "$@" ;;
*) die "unknown command: $command (up, down, status)" ;;
esac
