#!/usr/bin/env bash
# The compile-time checked queries (`sqlx::query!` and friends) and their offline data.
#
# The macros check each static query against the services' real schema: a database
# (`reseller_sqlx_schema`) made here from every service's migrations. The check's
# result is committed in `.sqlx/` at the workspace root, and every other build reads
# it offline (`SQLX_OFFLINE=true` in `.cargo/config.toml`), so building and testing
# need no such database.
#
# Usage: deploy/local/sqlx.sh schema    recreate the schema database, print its URL
#        deploy/local/sqlx.sh prepare   rewrite .sqlx/ after a query or migration changed
#        deploy/local/sqlx.sh check     fail when .sqlx/ does not match the queries (CI)
# Honours DATABASE_URL (the server to make the schema database on) and SQLX_SCHEMA_DB
# (its name, default reseller_sqlx_schema; one per worktree lets several people work).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

SQLX_CLI_VERSION=0.9.0
SERVICES=(customer device msp-link reporting)
SCHEMA_DB=${SQLX_SCHEMA_DB:-reseller_sqlx_schema}
[[ $SCHEMA_DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "SQLX_SCHEMA_DB must be a plain lower-case name"

ensure_sqlx_cli() {
    if cargo sqlx --version 2>/dev/null | grep -q "$SQLX_CLI_VERSION"; then
        return
    fi
    log "installing sqlx-cli $SQLX_CLI_VERSION (once; a few minutes)"
    cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --locked \
        --no-default-features --features postgres,rustls,sqlx-toml >&2
}

# Recreates the schema database from the migrations, as the services would run them
# (each service's schema, from its sqlx.toml), and prints its URL.
schema_database() {
    ensure_postgres >/dev/null
    local url
    url=$(db_url_with_name "$DATABASE_URL" "$SCHEMA_DB")
    psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 >&2 \
        -c "DROP DATABASE IF EXISTS $SCHEMA_DB WITH (FORCE)" -c "CREATE DATABASE $SCHEMA_DB"
    local service schema file
    for service in "${SERVICES[@]}"; do
        schema=$(sed -n 's/^create-schemas = \["\([a-z_]*\)"\]/\1/p' "services/$service/sqlx.toml")
        [ -n "$schema" ] || die "services/$service/sqlx.toml names no schema"
        psql "$url" -X -q -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $schema" >&2
        for file in "services/$service"/migrations/*.sql; do
            psql "$url" -X -q -v ON_ERROR_STOP=1 -1 -f "$file" >&2
        done
    done
    printf '%s\n' "$url"
}

prepare() {
    ensure_sqlx_cli
    local url
    url=$(schema_database)
    # Every target: unit tests hold checked queries too.
    DATABASE_URL=$url SQLX_OFFLINE=false cargo sqlx prepare --workspace "$@" -- --all-targets
}

case "${1:-}" in
schema) schema_database ;;
prepare) prepare ;;
check) prepare --check ;;
*) die "usage: $0 schema|prepare|check" ;;
esac
