#!/usr/bin/env bash
# Starts the whole stack locally: PostgreSQL and NATS (installed and started
# when missing), then `reseller-portal` (all four services in one process) in
# the foreground. Ctrl-C stops the portal; PostgreSQL and NATS keep running.
#
# Usage: deploy/local/up.sh [extra reseller-portal arguments]
# Honours DATABASE_URL, NATS_URL, AUTH_JWT_SECRET, GRPC_ADDR, METRICS_ADDR
# (default 127.0.0.1:9090: Prometheus metrics at /metrics, which
# deploy/local/prometheus.sh scrapes; empty turns them off), RUST_LOG and
# LOG_FORMAT when set.
set -euo pipefail

# Work from the repository root whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

ensure_build_tools
ensure_postgres
ensure_nats

# Locally all services share one database (each owns its own schema in it);
# it lives on whichever server DATABASE_URL points at.
db_name=${PORTAL_DB_NAME:-reseller_portal}
create_database "$db_name"
DATABASE_URL=$(db_url_with_name "$DATABASE_URL" "$db_name")
export DATABASE_URL

log "building reseller-portal (release)"
cargo build --release -p reseller-portal
portal="${CARGO_TARGET_DIR:-target}/release/reseller-portal"

if [ -z "${AUTH_JWT_SECRET:-}" ]; then
    log "WARNING: AUTH_JWT_SECRET is not set; using the development secret 'dev-secret-change-me'"
    AUTH_JWT_SECRET=dev-secret-change-me
fi
export AUTH_JWT_SECRET
export GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:50051}
# Set but empty means no metrics: the portal must not see an empty value.
export METRICS_ADDR=${METRICS_ADDR-127.0.0.1:9090}
[ -n "$METRICS_ADDR" ] || unset METRICS_ADDR

# Tokens are signed with AUTH_JWT_SECRET, so they only work against this run's
# secret. `dev-token` prints just the JWT on stdout.
ADMIN_TOKEN=$("$portal" dev-token --role admin --sub platform-admin)
RESELLER_TOKEN=$("$portal" dev-token --role reseller --sub demo-reseller)
CUSTOMER_TOKEN=$("$portal" dev-token --role customer --sub 100000000001)

# A wildcard bind address is not something a client can dial.
client_addr=$GRPC_ADDR
case "$client_addr" in
0.0.0.0:*) client_addr="127.0.0.1:${client_addr#0.0.0.0:}" ;;
"[::]:"*) client_addr="[::1]:${client_addr#\[::\]:}" ;;
esac

cat >&2 <<EOF

==> reseller-portal will listen on $GRPC_ADDR (gRPC, plaintext, with reflection)
    metrics: ${METRICS_ADDR:+http://$METRICS_ADDR/metrics (Prometheus: deploy/local/prometheus.sh in another terminal)}${METRICS_ADDR:-off (METRICS_ADDR is empty)}
    DATABASE_URL=$DATABASE_URL
    NATS_URL=$NATS_URL

==> development tokens (HS256, secret from AUTH_JWT_SECRET):
    export ADMIN_TOKEN=$ADMIN_TOKEN
    export RESELLER_TOKEN=$RESELLER_TOKEN
    export CUSTOMER_TOKEN=$CUSTOMER_TOKEN

==> try it (https://github.com/fullstorydev/grpcurl):
    grpcurl -plaintext -H "authorization: Bearer \$RESELLER_TOKEN" $client_addr list
    grpcurl -plaintext -H "authorization: Bearer \$RESELLER_TOKEN" \\
        -d '{"page_size": 20}' $client_addr reseller.v1.ReportingService/ListCustomers

==> starting reseller-portal (Ctrl-C to stop)
EOF

# exec: the portal gets SIGINT/SIGTERM directly and drains gracefully.
exec "$portal" "$@"
