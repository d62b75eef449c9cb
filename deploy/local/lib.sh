# shellcheck shell=bash
# Helpers shared by deploy/local/up.sh and deploy/local/test.sh.
#
# Sourced, not executed: the caller sets `set -euo pipefail`. Every helper is
# idempotent, so running a script twice (or with everything already running)
# changes nothing. Targets Debian 12 (apt, pg_ctlcluster) inside containers
# without systemd, which is why services are started by hand.

# Logs go to stderr so that stdout stays clean for values scripts capture.
log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '==> ERROR: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root (the usual case in a
# container), through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# apt-get update once per script run, then install. DEBIAN_FRONTEND goes
# through `env` because sudo would otherwise drop it from the environment.
_APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install these by hand: $*"
    if [ "$_APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -q >&2
        _APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds or
# the deadline passes. A deadline, not a fixed sleep: fast machines don't wait,
# slow ones don't fail spuriously.
wait_for() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "$what not ready after ${timeout}s"
        fi
        sleep 0.2
    done
}

# port_open HOST PORT: true if something accepts TCP connections there. Uses
# bash's /dev/tcp so it needs neither nc nor ss; `timeout` bounds a filtered
# port that would otherwise hang the connect.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# db_url_with_name URL NAME: URL with its database path replaced by NAME,
# keeping scheme, credentials, host, port and any ?query parameters.
db_url_with_name() {
    local url=$1 name=$2 base query scheme authority
    base=${url%%\?*}
    query=${url:${#base}}
    scheme=${base%%://*}
    authority=${base#*://}
    authority=${authority%%/*}
    printf '%s://%s/%s%s\n' "$scheme" "$authority" "$name" "$query"
}

# Some sandboxes have /dev/null as a regular file: what one process throws away there,
# the next one reads back. cargo's rustc probe (`rustc -`, fed from /dev/null) then
# fails with other processes' output as its "program". Put the real device back.
ensure_dev_null() {
    [ -c /dev/null ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        log "/dev/null is not the null device here; recreating it"
        rm -f /dev/null && mknod -m 666 /dev/null c 1 3 ||
            die "cannot recreate /dev/null"
    else
        log "WARNING: /dev/null is not the null device; cargo may fail (run as root to repair)"
    fi
}

# Puts ~/.cargo/bin on PATH (rustup's default; non-login shells often miss it)
# and makes sure a C linker exists, which rustc needs for every binary.
ensure_build_tools() {
    ensure_dev_null
    if [ -d "${HOME:-/root}/.cargo/bin" ]; then
        case ":$PATH:" in
        *":${HOME:-/root}/.cargo/bin:"*) ;;
        *) export PATH="${HOME:-/root}/.cargo/bin:$PATH" ;;
        esac
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust first (https://rustup.rs)"
    if ! command -v cc >/dev/null 2>&1; then
        apt_install build-essential pkg-config
    fi
    log "build tools: $(cargo --version)"
}

# Runs a command as the postgres OS user (peer authentication on the Unix
# socket), whichever of su/runuser/sudo this system has.
_as_postgres() {
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        (cd /tmp && sudo -u postgres "$@")
    elif command -v su >/dev/null 2>&1; then
        # su takes one command string; printf %q quotes each argument for it.
        (cd /tmp && su -s /bin/sh postgres -c "$(printf '%q ' "$@")")
    elif command -v runuser >/dev/null 2>&1; then
        (cd /tmp && runuser -u postgres -- "$@")
    else
        die "cannot switch to the postgres user (no su, runuser or sudo)"
    fi
}

_pg_answers() {
    psql "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c 'select 1' >/dev/null 2>&1
}

# Makes a PostgreSQL server answer at DATABASE_URL and exports DATABASE_URL.
#
# With DATABASE_URL already set, that server is the user's business: we only
# check it answers. Otherwise we install, start and use the local cluster on
# 127.0.0.1:5432 as user postgres/postgres.
ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        command -v psql >/dev/null 2>&1 || apt_install postgresql-client
        log "PostgreSQL: using DATABASE_URL from the environment"
        _pg_answers "$DATABASE_URL" ||
            die "DATABASE_URL is set but does not answer 'select 1'"
        export DATABASE_URL
        return
    fi

    if ! command -v psql >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        apt_install postgresql
    fi

    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        local version
        # shellcheck disable=SC2012 # plain version directory names
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
        if [ -z "$version" ]; then
            # Some images install the server with cluster creation disabled.
            # shellcheck disable=SC2012
            version=$(ls /usr/lib/postgresql | sort -V | tail -1)
            log "PostgreSQL: creating cluster $version/main"
            as_root pg_createcluster "$version" main >&2
        fi
        # A cluster that is running but not yet accepting (still starting, or
        # recovering) must not be started twice: pg_ctlcluster would fail.
        if ! as_root pg_ctlcluster "$version" main status >/dev/null 2>&1; then
            log "PostgreSQL: starting cluster $version/main"
            # No systemd in containers, so bypass the systemctl redirect.
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2
        fi
        wait_for "PostgreSQL on 127.0.0.1:5432" 60 pg_isready -q -h 127.0.0.1 -p 5432
    fi

    # Loopback: no TLS (sqlx's default, sslmode=prefer, would encrypt every test's
    # connections to Debian's server, which has ssl=on). Deployments choose
    # sslmode=require or verify-full; operations_postgres_tls tests that path.
    local url='postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable'
    if ! _pg_answers "$url"; then
        # A fresh Debian cluster has no password for postgres, and pg_hba asks
        # for one on TCP; give it the password the URL uses.
        log "PostgreSQL: setting the password of user postgres"
        _as_postgres psql -X -q -v ON_ERROR_STOP=1 \
            -c "ALTER USER postgres PASSWORD 'postgres'" >&2
        _pg_answers "$url" ||
            die "cannot log in as $url; check pg_hba.conf allows password login from 127.0.0.1"
    fi
    export DATABASE_URL=$url
    log "PostgreSQL: ready at $DATABASE_URL"
}

# Makes nats-server available for the tests (NATS_SERVER_BIN: they spawn their
# own isolated servers from it) and, unless NATS_URL is set, runs a shared
# JetStream server on 127.0.0.1:4222 for the programs. Exports both.
ensure_nats() {
    local bin
    bin=$(command -v nats-server 2>/dev/null || true)
    if [ -z "$bin" ] && [ -x /usr/sbin/nats-server ]; then
        bin=/usr/sbin/nats-server # /usr/sbin is not on a non-root PATH
    fi
    if [ -z "$bin" ]; then
        apt_install nats-server
        bin=$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)
        [ -x "$bin" ] || die "nats-server not found after installing it"
    fi
    export NATS_SERVER_BIN=$bin

    if [ -n "${NATS_URL:-}" ]; then
        log "NATS: using NATS_URL from the environment ($NATS_URL)"
        export NATS_URL
        return
    fi

    if ! port_open 127.0.0.1 4222; then
        log "NATS: starting $bin with JetStream on 127.0.0.1:4222"
        as_root mkdir -p /var/lib/nats-server /var/log
        # The pidfile matters: without it, --oknodo would see any nats-server
        # process (the tests start many, on other ports) as "already running"
        # and start nothing.
        as_root start-stop-daemon --start --oknodo --background \
            --pidfile /run/nats-server-4222.pid --make-pidfile \
            --exec "$bin" -- \
            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
            -l /var/log/nats-server.log >&2
        wait_for "NATS on 127.0.0.1:4222 (see /var/log/nats-server.log)" 30 \
            port_open 127.0.0.1 4222
    fi
    export NATS_URL=nats://127.0.0.1:4222
    log "NATS: ready at $NATS_URL (binary $NATS_SERVER_BIN)"
}

# Makes Prometheus and promtool available (Debian's `prometheus` package: both in
# /usr/bin) and exports PROMETHEUS_BIN and PROMTOOL_BIN. Installs only: the
# package's system service is not started here (no systemd in containers; the
# tests and deploy/local/prometheus.sh start their own servers on free ports).
ensure_prometheus() {
    local bin tool
    bin=$(command -v prometheus 2>/dev/null || true)
    tool=$(command -v promtool 2>/dev/null || true)
    if [ -z "$bin" ] || [ -z "$tool" ]; then
        # policy-rc.d 101 keeps the package's init script from starting the
        # service where an init system would run it (a real Debian host); without
        # Recommends, no node exporter comes along.
        _without_service_start apt_install --no-install-recommends prometheus
        # Nor is it started at boot: a system Prometheus would hold port 9090,
        # up.sh's METRICS_ADDR.
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            as_root deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
        fi
        bin=$(command -v prometheus 2>/dev/null || echo /usr/bin/prometheus)
        tool=$(command -v promtool 2>/dev/null || echo /usr/bin/promtool)
        [ -x "$bin" ] && [ -x "$tool" ] || die "prometheus or promtool not found after installing them"
    fi
    export PROMETHEUS_BIN=$bin PROMTOOL_BIN=$tool
    log "Prometheus: $("$bin" --version 2>&1 | head -1) ($bin, $tool)"
}

# _without_service_start COMMAND...: runs COMMAND with /usr/sbin/policy-rc.d
# refusing every service start (Debian's invoke-rc.d honours it), unless a
# policy-rc.d is there already, which is left alone.
_without_service_start() {
    local policy=/usr/sbin/policy-rc.d
    if [ -e "$policy" ]; then
        "$@"
        return
    fi
    as_root sh -c "printf '#!/bin/sh\\nexit 101\\n' >$policy && chmod 755 $policy"
    local status=0
    "$@" || status=$?
    as_root rm -f "$policy"
    return "$status"
}

# create_database NAME: creates database NAME on the server of DATABASE_URL
# unless it exists. The name travels as a psql variable (:'name' / :"name"),
# so it is quoted by psql, never spliced into SQL by the shell.
create_database() {
    local name=$1 exists
    [ -n "${DATABASE_URL:-}" ] || die "create_database: DATABASE_URL is not set"
    exists=$(psql "$DATABASE_URL" -X -q -A -t -v ON_ERROR_STOP=1 -v name="$name" <<'SQL'
select 1 from pg_database where datname = :'name'
SQL
    )
    if [ -z "$exists" ]; then
        log "PostgreSQL: creating database $name"
        psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -v name="$name" >&2 <<'SQL'
create database :"name"
SQL
    else
        log "PostgreSQL: database $name exists"
    fi
}
