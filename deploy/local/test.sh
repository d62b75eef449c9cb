#!/usr/bin/env bash
# Runs every check and test: the Kubernetes manifests, the alert rules
# (promtool), rustfmt, clippy (warnings are errors), then `cargo test
# --workspace` against a real PostgreSQL, NATS and Prometheus, which are
# installed (and PostgreSQL and NATS started) here when missing.
#
# Usage: deploy/local/test.sh [extra cargo test arguments]
#   e.g. deploy/local/test.sh -p device-service -- upload
# Honours DATABASE_URL and NATS_URL when set.
set -euo pipefail

# Work from the repository root whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

ensure_build_tools
# Nothing here reads a terminal (and /dev/null is the real device now).
exec </dev/null

# The Kubernetes manifests, rendered and checked offline (makes its own venv once).
deploy/k8s/validate.sh

ensure_postgres
ensure_nats
ensure_prometheus
# Tests read these: DATABASE_URL (sqlx::test creates a database per test on
# that server), NATS_URL, NATS_SERVER_BIN (tests spawn isolated servers), and
# PROMETHEUS_BIN and PROMTOOL_BIN (tests/tests/observability_prometheus.rs
# starts its own Prometheus and checks a scrape with promtool).
export DATABASE_URL NATS_URL NATS_SERVER_BIN PROMETHEUS_BIN PROMTOOL_BIN

# The alert rules: valid, and each alert fires on its case and not on its
# look-alike (deploy/monitoring/reseller-alerts.tests.yml).
log "promtool: alert rules"
"$PROMTOOL_BIN" check rules deploy/monitoring/reseller-alerts.rules.yml >&2
"$PROMTOOL_BIN" test rules deploy/monitoring/reseller-alerts.tests.yml >&2
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# rustup minimal profiles ship without rustfmt/clippy.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "adding rustfmt and clippy"
    command -v rustup >/dev/null 2>&1 || die "cargo fmt/clippy missing and rustup not found"
    rustup component add rustfmt clippy >&2
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace "$@"

# The checked queries' offline data (.sqlx/, read by every build above) must match the
# queries and the migrations: checked against a database made from the migrations.
log "sqlx offline data"
deploy/local/sqlx.sh check

log "all checks and tests passed"
