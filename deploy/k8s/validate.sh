#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: installs the validator's pinned
# Python dependencies into a venv (first run only: PyPI through pip), then runs
# validate.py (render every kustomization, schema and house-rule checks) and
# test_validate.py (mutations the validator must catch; the renderer against
# `kubectl kustomize` where kubectl exists). Run by deploy/local/test.sh.
#
# Usage: deploy/k8s/validate.sh [--regenerate]
#   --regenerate  first rewrite the generated monitoring objects
#                 (monitoring/prometheusrule.yaml from
#                 deploy/monitoring/reseller-alerts.rules.yml,
#                 monitoring/grafana-dashboard.yaml from grafana-dashboard.json)
#                 with gen_monitoring.py; without it, a stale one is an error.
# The venv lives in ${XDG_CACHE_HOME:-~/.cache}/reseller-portal/, named after a
# hash of requirements.txt and the Python version (K8S_VALIDATE_VENV overrides),
# so a changed requirements file gets a fresh one; after it exists, nothing here
# uses the network.
set -euo pipefail

regenerate=0
case "${1:-}" in
"") ;;
--regenerate) regenerate=1 ;;
*)
    echo "usage: $0 [--regenerate]" >&2
    exit 2
    ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/local/lib.sh
source "$here/../local/lib.sh"

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || die "python3 not found (install it: apt-get install python3)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "validate.py needs Python 3.9 or later; $python is $("$python" --version 2>&1)"

key=$( (cat "$here/requirements.txt"; "$python" --version 2>&1) | sha256sum | cut -c1-12)
venv=${K8S_VALIDATE_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/reseller-portal/k8s-validate-$key}

# The marker is written last: a venv whose install was interrupted is rebuilt.
if [ ! -f "$venv/.installed" ]; then
    log "k8s validator: creating $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        # Debian's python3 keeps venv in a package of its own.
        rm -rf "$venv"
        apt_install python3-venv
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore \
        --no-deps --requirement "$here/requirements.txt"
    "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null ||
        die "requirements.txt misses a dependency: $("$venv/bin/python" -m pip check 2>&1)"
    touch "$venv/.installed"
fi

cd "$here"
# Keep __pycache__ out of the source tree.
export PYTHONDONTWRITEBYTECODE=1
if [ "$regenerate" -eq 1 ]; then
    log "k8s validator: gen_monitoring.py --write"
    "$venv/bin/python" gen_monitoring.py --write
fi
log "k8s validator: validate.py"
"$venv/bin/python" validate.py
log "k8s validator: test_validate.py"
"$venv/bin/python" -m unittest test_validate
