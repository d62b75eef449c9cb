#!/usr/bin/env python3
"""Mutation tests for validate.py: break a copy of deploy/k8s one way at a time
and require the validator to fail with a message that names the problem.

Also renders every kustomization with kustomize_lite.py and with `kubectl
kustomize` (skipped where kubectl is missing) and requires the same objects.

Run by deploy/k8s/validate.sh: python -m unittest -v test_validate (from this directory).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

import gen_monitoring
import kustomize_lite
import validate

HERE = Path(__file__).resolve().parent


class MutatedTree(unittest.TestCase):
    """Each test gets its own copy of deploy/k8s to break."""

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="k8s-validate-")
        self.root = Path(self.tmp.name) / "k8s"
        self.reset()

    def reset(self) -> None:
        """A fresh copy of the tree (for several mutations in one test), beside a
        copy of what it reads from deploy/: the alert rules and the README."""
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.root.parent / "monitoring", ignore_errors=True)
        shutil.copytree(HERE, self.root, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(HERE.parent / "monitoring", self.root.parent / "monitoring")
        shutil.copy(HERE.parent / "README.md", self.root.parent / "README.md")

    def tearDown(self) -> None:
        self.tmp.cleanup()

    # -- helpers --

    def edit(self, rel: str, kind: str, name: str, change) -> None:
        """Applies change(doc) to the document of `kind`/`name` in file `rel`."""
        path = self.root / rel
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        target = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
        self.assertEqual(len(target), 1, f"{rel} has no single {kind}/{name}")
        change(target[0])
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))

    def edit_container(self, service: str, change) -> None:
        self.edit(
            f"base/{service}.yaml",
            "Deployment",
            service,
            lambda d: change(d["spec"]["template"]["spec"]["containers"][0]),
        )

    def edit_plain(self, rel: str, change) -> None:
        """Applies change(data) to a one-document YAML file (kustomization, values)."""
        path = self.root / rel
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def assertFailsWith(self, *fragments: str) -> None:
        """The validator reports a problem containing every fragment."""
        problems = validate.run(self.root).problems
        self.assertTrue(problems, "the validator passed a broken tree")
        matching = [p for p in problems if all(f in p for f in fragments)]
        self.assertTrue(matching, f"no problem mentions {fragments}; got:\n" + "\n".join(problems))
        # Every message says where, what, and how to fix it.
        self.assertIn("Fix:", matching[0])


class TreeAsCommitted(MutatedTree):
    def test_passes(self) -> None:
        report = validate.run(self.root)
        self.assertEqual(report.problems, [])


class Probes(MutatedTree):
    def test_missing_readiness_probe_fails(self) -> None:
        self.edit_container("device-service", lambda c: c.pop("readinessProbe"))
        self.assertFailsWith(
            "base/device-service.yaml", "Deployment/device-service", "readinessProbe missing"
        )

    def test_missing_liveness_probe_fails(self) -> None:
        self.edit_container("reporting-service", lambda c: c.pop("livenessProbe"))
        self.assertFailsWith("Deployment/reporting-service", "livenessProbe missing")

    def test_readiness_on_the_empty_name_fails(self) -> None:
        self.edit_container("customer-service", lambda c: c["readinessProbe"]["grpc"].update(service=""))
        self.assertFailsWith("Deployment/customer-service", "stays SERVING", "reseller.v1.CustomerService")

    def test_liveness_on_the_own_name_fails(self) -> None:
        self.edit_container(
            "msp-link-service", lambda c: c["livenessProbe"]["grpc"].update(service="reseller.v1.MspService")
        )
        self.assertFailsWith("Deployment/msp-link-service", "livenessProbe asks", "restart every pod")


class RestrictedSecurity(MutatedTree):
    def test_dropping_runAsNonRoot_fails(self) -> None:
        def drop(d):
            d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop("runAsNonRoot")

        self.edit("base/device-service.yaml", "Deployment", "device-service", drop)
        self.assertFailsWith("Deployment/device-service", "runAsNonRoot is not true")

    def test_dropping_each_container_field_fails(self) -> None:
        cases = {
            "allowPrivilegeEscalation": "allowPrivilegeEscalation is not false",
            "capabilities": "capabilities do not drop ALL",
            "readOnlyRootFilesystem": "readOnlyRootFilesystem is not true",
        }
        for key, message in cases.items():
            with self.subTest(field=key):
                self.reset()
                self.edit_container("customer-service", lambda c: c["securityContext"].pop(key))
                self.assertFailsWith("Deployment/customer-service", message)

    def test_dropping_seccomp_fails(self) -> None:
        def drop(d):
            d["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile")
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop("seccompProfile")

        self.edit("base/reporting-service.yaml", "Deployment", "reporting-service", drop)
        self.assertFailsWith("Deployment/reporting-service", "seccompProfile is unset")

    def test_allowing_privilege_escalation_fails(self) -> None:
        self.edit_container(
            "msp-link-service", lambda c: c["securityContext"].update(allowPrivilegeEscalation=True)
        )
        self.assertFailsWith("Deployment/msp-link-service", "allowPrivilegeEscalation is not false")


class NetworkPolicies(MutatedTree):
    def test_deleting_a_services_network_policy_fails(self) -> None:
        path = self.root / "base/device-service.yaml"
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "NetworkPolicy"]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.assertFailsWith("Deployment/device-service", "has no NetworkPolicy of its own")
        self.assertFailsWith("Deployment/device-service", "no egress to customer-service:50051")

    def test_deleting_the_default_deny_fails(self) -> None:
        def drop(k):
            k["resources"].remove("network-policies.yaml")

        self.edit_plain("base/kustomization.yaml", drop)
        self.assertFailsWith("Deployment/customer-service", "no egress to PostgreSQL")

    def test_an_extra_ingress_port_fails(self) -> None:
        self.edit(
            "base/customer-service.yaml",
            "NetworkPolicy",
            "customer-service",
            lambda d: d["spec"]["ingress"].append({"ports": [{"port": 22, "protocol": "TCP"}]}),
        )
        self.assertFailsWith("NetworkPolicy/customer-service", "ingress to port 22")

    def test_egress_to_a_service_it_does_not_call_fails(self) -> None:
        rule = {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "reporting-service"}}}],
            "ports": [{"port": 50051, "protocol": "TCP"}],
        }
        self.edit(
            "base/device-service.yaml",
            "NetworkPolicy",
            "device-service",
            lambda d: d["spec"]["egress"].append(rule),
        )
        self.assertFailsWith("NetworkPolicy/device-service", "reporting-service")


class ShutdownBudget(MutatedTree):
    def test_longer_preStop_sleep_fails(self) -> None:
        self.edit_container(
            "device-service", lambda c: c["lifecycle"]["preStop"]["exec"].update(command=["sleep", "15"])
        )
        self.assertFailsWith(
            "Deployment/device-service",
            "preStop sleep 15s + SHUTDOWN_GRACE_SECONDS 20s = 35s exceeds terminationGracePeriodSeconds 30s",
        )

    def test_longer_drain_fails(self) -> None:
        def longer(c):
            next(e for e in c["env"] if e["name"] == "SHUTDOWN_GRACE_SECONDS")["value"] = "30"

        self.edit_container("customer-service", longer)
        self.assertFailsWith("Deployment/customer-service", "= 35s exceeds terminationGracePeriodSeconds 30s")

    def test_shorter_grace_period_fails(self) -> None:
        self.edit(
            "base/msp-link-service.yaml",
            "Deployment",
            "msp-link-service",
            lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=20),
        )
        self.assertFailsWith("Deployment/msp-link-service", "exceeds terminationGracePeriodSeconds 20s")

    def test_missing_preStop_fails(self) -> None:
        self.edit_container("reporting-service", lambda c: c.pop("lifecycle"))
        self.assertFailsWith("Deployment/reporting-service", "no preStop sleep")


class Overlays(MutatedTree):
    def test_prod_without_stream_replicas_fails(self) -> None:
        self.edit_plain("overlays/prod/kustomization.yaml", lambda k: k.pop("patches"))
        self.assertFailsWith("overlays/prod:", "NATS_STREAM_REPLICAS is '1' in production")

    def test_prod_with_one_replica_fails(self) -> None:
        self.edit_plain("overlays/prod/kustomization.yaml", lambda k: k["replicas"][0].update(count=1))
        self.assertFailsWith(
            "overlays/prod:", "Deployment/customer-service", "runs 1 replica(s) in production"
        )

    def test_unknown_trace_sampler_fails(self) -> None:
        self.edit(
            "base/configmap.yaml",
            "ConfigMap",
            "reseller-portal-config",
            lambda c: c["data"].update(OTEL_TRACES_SAMPLER="ratio"),
        )
        self.assertFailsWith("ConfigMap", "OTEL_TRACES_SAMPLER is 'ratio'", "parentbased_traceidratio")

    def test_ratio_sampler_without_a_ratio_fails(self) -> None:
        self.edit(
            "base/configmap.yaml",
            "ConfigMap",
            "reseller-portal-config",
            lambda c: c["data"].update(
                OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="10%"
            ),
        )
        self.assertFailsWith("OTEL_TRACES_SAMPLER_ARG is '10%'", "a ratio from 0 to 1")

    def test_connection_budget_fails(self) -> None:
        path = self.root / "overlays/prod/hpa.yaml"
        docs = list(yaml.safe_load_all(path.read_text()))
        docs[0]["spec"]["maxReplicas"] = 12
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.assertFailsWith(
            "overlays/prod:", "Cluster/reseller-pg", "connection budget exceeded: 468 connections"
        )

    def test_missing_topology_spread_fails(self) -> None:
        self.edit(
            "base/device-service.yaml",
            "Deployment",
            "device-service",
            lambda d: d["spec"]["template"]["spec"].pop("topologySpreadConstraints"),
        )
        self.assertFailsWith("Deployment/device-service", "no topology spread across nodes")

    def test_unlisted_manifest_fails(self) -> None:
        shutil.copy(self.root / "base/customer-service.yaml", self.root / "base/forgotten.yaml")
        self.assertFailsWith("base/forgotten.yaml", "no kustomization lists it")

    def test_unsupported_kustomize_feature_fails(self) -> None:
        self.edit_plain("overlays/dev/kustomization.yaml", lambda k: k.update(namePrefix="dev-"))
        self.assertFailsWith("overlays/dev", "namePrefix not supported")


class Schemas(MutatedTree):
    def test_unknown_field_in_a_deployment_fails(self) -> None:
        self.edit(
            "base/device-service.yaml", "Deployment", "device-service", lambda d: d["spec"].update(replica=2)
        )
        self.assertFailsWith("Deployment/device-service", "'replica' was unexpected", "Kubernetes 1.30")

    def test_wrong_type_in_a_service_fails(self) -> None:
        self.edit(
            "base/customer-service.yaml",
            "Service",
            "customer-service",
            lambda d: d["spec"]["ports"][0].update(port="fifty"),
        )
        self.assertFailsWith("Service/customer-service", "spec.ports.0.port")

    def test_cnpg_cluster_with_wrong_type_fails(self) -> None:
        self.edit(
            "postgres/cluster.yaml", "Cluster", "reseller-pg", lambda d: d["spec"].update(instances="three")
        )
        self.assertFailsWith("postgres/cluster.yaml: Cluster/reseller-pg", "spec.instances", "its CRD")

    def test_cnpg_cluster_with_unknown_field_fails(self) -> None:
        self.edit(
            "postgres/cluster.yaml",
            "Cluster",
            "reseller-pg",
            lambda d: d["spec"]["postgresql"].update(pghba=["x"]),
        )
        self.assertFailsWith("Cluster/reseller-pg", "'pghba' was unexpected")

    def test_servicemonitor_is_checked_against_its_crd(self) -> None:
        self.edit(
            "monitoring/servicemonitor.yaml",
            "ServiceMonitor",
            "reseller-portal",
            lambda d: d["spec"]["endpoints"][0].update(interval=30),
        )
        self.assertFailsWith("ServiceMonitor/reseller-portal", "spec.endpoints.0.interval")

    def test_prometheusrule_is_checked_against_its_crd(self) -> None:
        self.edit(
            "monitoring/prometheusrule.yaml",
            "PrometheusRule",
            "reseller-portal",
            lambda d: d["spec"]["groups"][0]["rules"][0].update(expresion=d["spec"]["groups"][0]["rules"][0].pop("expr")),
        )
        self.assertFailsWith("PrometheusRule/reseller-portal", "spec.groups.0.rules.0")

    def test_stale_prometheusrule_fails(self) -> None:
        rules = self.root.parent / "monitoring/reseller-alerts.rules.yml"
        rules.write_text(rules.read_text().replace("> 30", "> 60", 1))
        self.assertFailsWith("monitoring/prometheusrule.yaml", "out of date", "--regenerate")
        self.assertEqual(gen_monitoring.main(["gen_monitoring.py", "--write", str(self.root)]), 0)
        self.assertEqual(validate.run(self.root).problems, [], "regenerating must bring it back in sync")

    def test_stale_dashboard_fails(self) -> None:
        dashboard = self.root / "monitoring/grafana-dashboard.json"
        dashboard.write_text(dashboard.read_text().replace('"Reseller portal"', '"Reseller portal (edited)"', 1))
        self.assertFailsWith("monitoring/grafana-dashboard.yaml", "out of date")

    def test_alert_without_runbook_paragraph_fails(self) -> None:
        readme = self.root.parent / "README.md"
        readme.write_text(readme.read_text().replace("#### ResellerDeadLetters", "#### Dead letters", 1))
        self.assertFailsWith("ResellerDeadLetters", "names no heading of deploy/README.md")

    def test_alert_without_severity_fails(self) -> None:
        rules = self.root.parent / "monitoring/reseller-alerts.rules.yml"
        rules.write_text(rules.read_text().replace("severity: warning", "severity: page-me", 1))
        self.assertFailsWith("reseller-alerts.rules.yml", "no severity label")

    def test_a_kind_without_schema_fails(self) -> None:
        (self.root / "base/extra.yaml").write_text(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
        )
        self.edit_plain("base/kustomization.yaml", lambda k: k["resources"].append("extra.yaml"))
        self.assertFailsWith("Widget/w", "no schema for example.com/v1 Widget")


class NatsValues(MutatedTree):
    def test_without_fsync_always_fails(self) -> None:
        self.edit_plain("nats/values.yaml", lambda v: v["config"]["jetstream"].pop("merge"))
        self.assertFailsWith("nats/values.yaml", "config.jetstream.merge.sync_interval is None")

    def test_two_servers_fail(self) -> None:
        self.edit_plain("nats/values.yaml", lambda v: v["config"]["cluster"].update(replicas=2))
        self.assertFailsWith("nats/values.yaml", "config.cluster.replicas is 2")

    def test_unknown_key_fails(self) -> None:
        self.edit_plain(
            "nats/values.yaml", lambda v: v["config"]["jetstream"]["fileStore"].update(pvcSize="50Gi")
        )
        self.assertFailsWith(
            "nats/values.yaml", "config.jetstream.fileStore.pvcSize is not a value of the NATS chart"
        )

    def test_wrong_type_fails(self) -> None:
        self.edit_plain("nats/values.yaml", lambda v: v["config"]["cluster"].update(enabled="yes"))
        self.assertFailsWith("nats/values.yaml", "config.cluster.enabled is a str, the chart expects a bool")

    def test_old_server_image_fails(self) -> None:
        self.edit_plain("nats/values.yaml", lambda v: v["container"].update(image={"tag": "2.9.25-alpine"}))
        self.assertFailsWith("nats/values.yaml", "older than NATS 2.10")


@unittest.skipUnless(shutil.which("kubectl"), "kubectl not on PATH")
class RendererMatchesKustomize(unittest.TestCase):
    """kustomize_lite.py renders what `kubectl kustomize` renders, object for object."""

    def test_every_kustomization(self) -> None:
        for directory in validate.kustomization_dirs(HERE):
            label = str(directory.relative_to(HERE))
            with self.subTest(kustomization=label):
                ours = {(r.kind, r.name): r.obj for r in kustomize_lite.render(directory, HERE)}
                out = subprocess.run(
                    ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
                )
                theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
                self.assertEqual(sorted(ours), sorted(theirs))
                for key, obj in ours.items():
                    self.assertEqual(obj, theirs[key], f"{label}: {key} differs from kubectl kustomize")


if __name__ == "__main__":
    unittest.main()
