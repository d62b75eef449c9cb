#!/usr/bin/env python3
"""Generates the monitoring objects of deploy/k8s/monitoring/ from their sources.

- monitoring/prometheusrule.yaml: a prometheus-operator PrometheusRule holding
  the groups of deploy/monitoring/reseller-alerts.rules.yml, the one rule file
  (Prometheus and the tests load it as is; promtool checks and tests it).
- monitoring/grafana-dashboard.yaml: a ConfigMap labelled `grafana_dashboard:
  "1"` (what Grafana's dashboard sidecar, e.g. in kube-prometheus-stack, picks
  up) holding monitoring/grafana-dashboard.json, the dashboard as Grafana
  exports it (import it by hand into any Grafana, or edit it there and export
  it over the file).

validate.py regenerates both in memory and fails when the committed files
differ, naming the fix: `deploy/k8s/validate.sh --regenerate` (which runs this
with --write in the validator's venv, then validates).

Usage: python3 gen_monitoring.py [--write] [ROOT]
  ROOT is deploy/k8s (default: this directory); the rule file is read from
  ROOT/../monitoring/. Without --write, prints the files that are out of date
  and exits 1 if any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = Path("..") / "monitoring" / "reseller-alerts.rules.yml"  # relative to ROOT
DASHBOARD = Path("monitoring") / "grafana-dashboard.json"
PROMETHEUS_RULE = Path("monitoring") / "prometheusrule.yaml"
DASHBOARD_CONFIGMAP = Path("monitoring") / "grafana-dashboard.yaml"
NAME = "reseller-portal"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, the dashboard's JSON) as literal blocks, so
    the generated files read like the sources."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(obj: dict, header: str) -> str:
    body = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return header + body


def _header(source: str, what: str) -> str:
    return (
        f"# GENERATED from {source} by deploy/k8s/gen_monitoring.py: do not edit.\n"
        f"# {what}\n"
        "# Regenerate (and validate) with: deploy/k8s/validate.sh --regenerate\n"
    )


def prometheus_rule(root: Path) -> str:
    """The PrometheusRule for the rule file's groups, as YAML text."""
    rules = yaml.safe_load((root / RULES).read_text(encoding="utf-8"))
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": NAME},
        "spec": {"groups": rules["groups"]},
    }
    what = (
        "prometheus-operator loads it into every Prometheus whose ruleSelector matches its "
        "labels\n# (kube-prometheus-stack: `release: <its release>`; add that label in your overlay)."
    )
    return _dump(obj, _header("deploy/monitoring/reseller-alerts.rules.yml", what))


def dashboard_configmap(root: Path) -> str:
    """The ConfigMap that ships the dashboard JSON to Grafana's sidecar, as YAML text."""
    text = (root / DASHBOARD).read_text(encoding="utf-8")
    json.loads(text)  # refuse to ship a dashboard Grafana cannot read
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-dashboard", "labels": {"grafana_dashboard": "1"}},
        "data": {f"{NAME}.json": text},
    }
    what = (
        "Grafana's dashboard sidecar loads every ConfigMap labelled grafana_dashboard: \"1\" "
        "(kube-prometheus-stack:\n# grafana.sidecar.dashboards, searching all namespaces or this one)."
    )
    return _dump(obj, _header("deploy/k8s/monitoring/grafana-dashboard.json", what))


def generated(root: Path) -> dict[Path, str]:
    """Each generated file (relative to ROOT) and the text it must have.

    # Errors
    OSError when a source is missing, yaml.YAMLError or json.JSONDecodeError
    when one does not parse.
    """
    return {PROMETHEUS_RULE: prometheus_rule(root), DASHBOARD_CONFIGMAP: dashboard_configmap(root)}


def stale(root: Path) -> list[Path]:
    """The generated files whose committed text differs from what the sources give."""
    out = []
    for rel, text in generated(root).items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--write"]
    root = Path(args[0]).resolve() if args else HERE
    if "--write" in argv:
        for rel, text in generated(root).items():
            path = root / rel
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {rel}")
        return 0
    out_of_date = stale(root)
    for rel in out_of_date:
        print(f"{rel} is out of date: run deploy/k8s/validate.sh --regenerate", file=sys.stderr)
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
