#!/usr/bin/env bash
# Runs the benchmarks of issue #3 and prints their JSON results on stdout (one object per
# line: ingest, export, deletion_propagation, then a summary); progress goes to stderr.
# Each result holds the service's numbers, the reference measured in the same run, the
# ratio, the target and `pass`. A missed target does not fail the script.
#
# Usage: deploy/local/bench.sh [reseller-bench arguments]
#   e.g. deploy/local/bench.sh --only deletion --delete-seconds 5
#        deploy/local/bench.sh --help
# PostgreSQL and nats-server are installed and started when missing; the bench creates
# (and drops) its own database on DATABASE_URL's server and spawns its own nats-server.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

ensure_build_tools
# Nothing here reads a terminal (and /dev/null is the real device now).
exec </dev/null
ensure_postgres
ensure_nats
export DATABASE_URL NATS_SERVER_BIN

log "building reseller-portal and reseller-bench (release)"
cargo build --release -p reseller-portal -p reseller-bench >&2

# The bench runs the reseller-portal binary next to it (or BENCH_PORTAL_BIN).
exec "${CARGO_TARGET_DIR:-target}/release/reseller-bench" "$@"
