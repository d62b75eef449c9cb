#!/usr/bin/env bash
# Runs a Prometheus in the foreground that scrapes what deploy/local/up.sh or
# deploy/local/cluster.sh runs, every 5 s, with the project's alert rules
# (deploy/monitoring/reseller-alerts.rules.yml) loaded. Installs Debian's
# prometheus package first when missing (never its system service). Ctrl-C
# stops it; its data stays in PROMETHEUS_DIR for the next run.
#
# Usage: deploy/local/prometheus.sh [up|cluster] [extra prometheus flags]
#   up       (default) the single reseller-portal of up.sh: METRICS_ADDR,
#            default 127.0.0.1:9090
#   cluster  every replica of cluster.sh: the metrics ports it recorded in
#            CLUSTER_DIR (default target/cluster)
# Settings: PROMETHEUS_ADDR (default 127.0.0.1:9091, the web UI and API),
# PROMETHEUS_DIR (default target/prometheus: its config and TSDB).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

mode=up
case "${1:-}" in
up | cluster)
    mode=$1
    shift
    ;;
-h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

ensure_prometheus

dir=${PROMETHEUS_DIR:-target/prometheus}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
addr=${PROMETHEUS_ADDR:-127.0.0.1:9091}
rules=$(pwd)/deploy/monitoring/reseller-alerts.rules.yml

# scrape_job JOB REPLICA ADDRESS: one job with one target, labelled with the
# replica's name (as the tests' Prometheus does).
scrape_job() {
    cat <<EOF
  - job_name: $1
    static_configs:
      - targets: ["$3"]
        labels: {replica: "$2"}
EOF
}

{
    cat <<EOF
# Written by deploy/local/prometheus.sh ($mode); rewritten on every run.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $rules
scrape_configs:
EOF
    if [ "$mode" = up ]; then
        metrics=${METRICS_ADDR:-127.0.0.1:9090}
        # A wildcard bind address is not something Prometheus can dial.
        case "$metrics" in
        0.0.0.0:*) metrics="127.0.0.1:${metrics#0.0.0.0:}" ;;
        esac
        scrape_job reseller-portal reseller-portal "$metrics"
    else
        targets=${CLUSTER_DIR:-target/cluster}/metrics-targets
        [ -f "$targets" ] ||
            die "no $targets: start the cluster first (deploy/local/cluster.sh up)"
        # One line per replica: <program> <replica name> <host:port>.
        while read -r program name target; do
            scrape_job "$program" "$name" "$target"
        done <"$targets"
    fi
} >"$dir/prometheus.yml"

"$PROMTOOL_BIN" check config "$dir/prometheus.yml" >&2

cat >&2 <<EOF

==> Prometheus on http://$addr (config $dir/prometheus.yml, data $dir/data)
    targets:  http://$addr/targets
    alerts:   http://$addr/alerts
    query:    curl -s 'http://$addr/api/v1/query' --data-urlencode 'query=sum by (service, code) (reseller_grpc_requests_total)'
    Ctrl-C to stop.

EOF
exec "$PROMETHEUS_BIN" \
    --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/data" \
    --web.listen-address="$addr" \
    --web.console.templates="$dir" --web.console.libraries="$dir" \
    "$@"
