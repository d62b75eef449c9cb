#!/usr/bin/env bash
# Runs the benchmarks of issues #3, #10 and #11 and prints their JSON results on stdout (one
# object per line: each result, then a summary); progress goes to stderr. Each result
# holds the service's numbers, the reference measured in the same run, the ratio, the
# target and `pass`. A missed target does not fail the script.
#
# Usage: deploy/local/bench.sh [reseller-bench arguments]
#   e.g. deploy/local/bench.sh --only deletion --delete-seconds 5
#        deploy/local/bench.sh --shape cluster                       # deletion + throughput
#        deploy/local/bench.sh --shape cluster --only throughput --replicas 1,2
#        deploy/local/bench.sh --telemetry-rounds 4 --delete-seconds 10  # issue #11: telemetry on vs off
#        deploy/local/bench.sh --only cold-export                    # issue #12: the first export of fresh rows vs the first COPY TO of twins
#        deploy/local/bench.sh --help
# PostgreSQL and nats-server are installed and started when missing. The single shape
# (default) creates (and drops) its own database on DATABASE_URL's server and spawns its
# own nats-server; the cluster shape (`--shape cluster`) runs every service as its own
# processes on a NATS cluster and a private PostgreSQL (initdb) it makes itself.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

shape=single
previous=
for arg in "$@"; do
    case "$arg" in
    --shape=*) shape=${arg#--shape=} ;;
    *) [ "$previous" = --shape ] && shape=$arg ;;
    esac
    previous=$arg
done

ensure_build_tools
# Nothing here reads a terminal (and /dev/null is the real device now).
exec </dev/null
ensure_postgres
ensure_nats
export DATABASE_URL NATS_SERVER_BIN

target_dir=${CARGO_TARGET_DIR:-target}
packages=(-p reseller-bench)
case "$shape" in
cluster)
    # The cluster runs the four service programs, one process per replica.
    packages+=(-p customer-service -p device-service -p msp-link-service -p reporting-service)
    export RESELLER_SERVICE_BIN_DIR="$PWD/$target_dir/release"
    case "$target_dir" in /*) export RESELLER_SERVICE_BIN_DIR="$target_dir/release" ;; esac
    ;;
*)
    # The bench runs the reseller-portal binary next to it (or BENCH_PORTAL_BIN).
    packages+=(-p reseller-portal)
    ;;
esac
log "building ${packages[*]} (release)"
cargo build --release "${packages[@]}" >&2

exec "$target_dir/release/reseller-bench" "$@"
