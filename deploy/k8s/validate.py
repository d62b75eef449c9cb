#!/usr/bin/env python3
"""Offline checks of deploy/k8s: what would be applied, and whether it is right.

Run through deploy/k8s/validate.sh, which installs the pinned requirements
(kubernetes-validate, jsonschema, PyYAML) into a venv once and runs this and
test_validate.py. Needs no cluster, no kubectl and no network.

1. Renders every kustomization (base/, postgres/, monitoring/, overlays/*) with
   kustomize_lite.py, a subset of kustomize that test_validate.py compares with
   `kubectl kustomize` wherever kubectl exists.
2. Validates every rendered object against its schema, unknown fields being
   errors: Kubernetes' own (kubernetes-validate) and, for custom resources, the
   CRDs vendored in vendor/ (CloudNativePG Cluster, ServiceMonitor,
   PrometheusRule).
3. Checks every Deployment against the house rules: probes, the restricted
   security context, settings, the shutdown budget, topology spread, its
   Service, PodDisruptionBudget and NetworkPolicies.
4. Checks what the overlays promise: prod* overlays run >= 2 replicas of every
   service with stream replicas 3; every overlay's PostgreSQL connections fit
   the CloudNativePG cluster's max_connections.
5. Checks nats/values.yaml against the NATS chart's own values.yaml (vendored;
   the chart ships no values schema) and against what the portal relies on.
6. Checks the monitoring objects gen_monitoring.py generates (the
   PrometheusRule from deploy/monitoring/reseller-alerts.rules.yml, the Grafana
   dashboard's ConfigMap) are in sync with their sources, and that every alert
   has a severity, a summary, a description and a runbook_url naming a heading
   of deploy/README.md.

Every problem names the file, the object and the fix. Exit status 1 on any.
Usage: python3 deploy/k8s/validate.py [ROOT]   (ROOT defaults to this directory)
"""

from __future__ import annotations

import functools
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import jsonschema
    import kubernetes_validate.utils as kv
    import yaml
    from referencing import Registry
    from referencing import Resource as SchemaResource
except ImportError as missing:  # pragma: no cover - environment problem, not a finding
    sys.exit(f"validate.py needs {missing.name}: run deploy/k8s/validate.sh, which installs its dependencies")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_monitoring  # noqa: E402
import kustomize_lite  # noqa: E402
from kustomize_lite import RenderError, Resource  # noqa: E402

HERE = Path(__file__).resolve().parent
# The oldest Kubernetes the manifests must apply to (gRPC probes and
# topologySpreadConstraints.matchLabelKeys need 1.27 or later).
KUBERNETES_VERSION = "1.30"

GRPC_PORT = 50051
METRICS_PORT = 9090
SECRET = "reseller-portal-secrets"
CONFIGMAP = "reseller-portal-config"
CNPG_CLUSTER = "reseller-pg"
# Each service's own gRPC health name: NOT_SERVING while PostgreSQL or NATS is
# unreachable. The empty name stays SERVING while the process runs.
HEALTH_NAMES = {
    "customer-service": "reseller.v1.CustomerService",
    "device-service": "reseller.v1.DeviceService",
    "msp-link-service": "reseller.v1.MspService",
    "reporting-service": "reseller.v1.ReportingService",
}
# Which services call which over gRPC (and so need its URL and an egress rule).
CALLS = {"device-service": ["customer-service"], "msp-link-service": ["customer-service"]}
SERVICE_URL_SETTINGS = {"customer-service": "CUSTOMER_SERVICE_URL"}
# The program's defaults, used when a setting is not given.
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20
DEFAULT_DATABASE_MAX_CONNECTIONS = 16
# Connections a pod holds besides its pool: the relay's leadership connection
# (every replica keeps one, waiting or leading) and the leader's LISTEN.
CONNECTIONS_OUTSIDE_POOL = 2
# PostgreSQL connections kept for others than the services: CloudNativePG's
# instance manager and metrics exporter, and operators' psql sessions.
POSTGRES_HEADROOM = 10
# Egress every pod needs, as (port, protocol); OTLP is added when configured.
REQUIRED_EGRESS = {(53, "UDP"): "DNS", (5432, "TCP"): "PostgreSQL", (4222, "TCP"): "NATS"}
OTLP_PORT = 4317
# YAML files no kustomization lists, on purpose.
NOT_KUSTOMIZED = ("vendor/", "nats/", "base/secret.example.yaml")


# --- reporting -------------------------------------------------------------------


@dataclass
class Report:
    """Problems found, each with where it is, what is wrong and how to fix it."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, where: str, what: str, fix: str) -> None:
        self.problems.append(f"{where}: {what}. Fix: {fix}")

    def grouped(self, labels: set[str]) -> list[str]:
        """The problems, one line for a problem that several renders share (a
        broken base shows in every overlay): `base, overlays/prod: file: ...`."""
        by_rest: dict[str, list[str]] = {}
        for problem in self.problems:
            label, _, rest = problem.partition(": ")
            if label not in labels:
                label, rest = "", problem
            by_rest.setdefault(rest, []).append(label)
        return [
            f"{', '.join(l for l in found if l)}: {rest}" if any(found) else rest
            for rest, found in by_rest.items()
        ]


@dataclass
class Rendered:
    """One rendered kustomization and lookups over it."""

    label: str  # e.g. overlays/prod
    resources: list[Resource]

    @property
    def deployable(self) -> bool:
        """Overlays are applied; base/, postgres/ and monitoring/ are building blocks."""
        return self.label.startswith("overlays/")

    @property
    def production(self) -> bool:
        return self.label.startswith("overlays/prod")

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def named(self, kind: str, name: str) -> Resource | None:
        return next((r for r in self.of_kind(kind) if r.name == name), None)

    def config(self) -> dict:
        cm = self.named("ConfigMap", CONFIGMAP)
        return (cm.obj.get("data") or {}) if cm else {}

    def where(self, r: Resource) -> str:
        return f"{self.label}: {r.describe()}"


# --- 2. schemas ------------------------------------------------------------------


def _strictify(node):
    """CRD schema -> JSON schema that refuses unknown fields (as `kubectl apply
    --validate=strict` does) and knows OpenAPI's `nullable`."""
    if isinstance(node, dict):
        node = {k: _strictify(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        return node
    if isinstance(node, list):
        return [_strictify(v) for v in node]
    return node


@functools.lru_cache(maxsize=None)
def crd_validators() -> dict[tuple[str, str, str], jsonschema.protocols.Validator]:
    """(group, version, kind) -> validator, from every CRD vendored under vendor/."""
    out = {}
    for path in sorted((HERE / "vendor").rglob("*.yaml")):
        for doc in kustomize_lite.parse_yaml(path.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = _strictify(version["schema"]["openAPIV3Schema"])
                key = (spec["group"], version["name"], spec["names"]["kind"])
                out[key] = jsonschema.Draft4Validator(schema)
    return out


@functools.lru_cache(maxsize=None)
def kubernetes_validator(api_version: str, kind: str):
    """kubernetes-validate's strict schema for a built-in kind, or None.

    The same lookup as kubernetes_validate.validate(), cached: that function
    re-reads the 1.3 MB definitions file for every object.
    """
    version, directory = kubernetes_schema_dir()
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # apps/v1 -> apps-v1
    try:
        schema = kv.schema_contents(f"{directory}/{kind.lower()}-{api}.json", version)
    except FileNotFoundError:
        return None
    registry = kubernetes_definitions() @ (SchemaResource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.lru_cache(maxsize=None)
def kubernetes_schema_dir() -> tuple[str, str]:
    """The newest schema set kubernetes-validate has that is not newer than KUBERNETES_VERSION."""
    wanted = tuple(int(x) for x in KUBERNETES_VERSION.split("."))
    versions = [v for v in kv.all_versions() if tuple(int(x) for x in kv.major_minor(v).split(".")) <= wanted]
    return versions[-1], f"kubernetes-json-schema/v{versions[-1]}-local-strict"


@functools.lru_cache(maxsize=None)
def kubernetes_definitions():
    version, directory = kubernetes_schema_dir()
    return SchemaResource.from_contents(kv.schema_contents(f"{directory}/_definitions.json", version))


def check_schema(report: Report, rendered: Rendered, r: Resource) -> None:
    """Every object matches its schema: Kubernetes' own for built-in kinds, the
    vendored CRD for custom resources. Unknown fields are errors."""
    api_version = r.obj.get("apiVersion", "")
    group, _, version = api_version.rpartition("/")
    crd = crd_validators().get((group, version, r.kind))
    validator = crd or kubernetes_validator(api_version, r.kind)
    if validator is None:
        report.add(
            rendered.where(r),
            f"no schema for {api_version} {r.kind}",
            "use a built-in kind, or vendor its CustomResourceDefinition under deploy/k8s/vendor/ (see vendor/README.md)",
        )
        return
    for error in sorted(validator.iter_errors(r.obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        source = "its CRD in deploy/k8s/vendor" if crd else f"Kubernetes {KUBERNETES_VERSION}"
        report.add(rendered.where(r), f"{path}: {error.message}", f"make it match the schema of {source}")


# --- 3. house rules for every Deployment ---------------------------------------------


def selects(selector: dict | None, labels: dict) -> bool:
    """Does a label selector (matchLabels and matchExpressions) select these labels?"""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_spec(dep: Resource) -> dict:
    return ((dep.obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(dep: Resource) -> dict:
    return (((dep.obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def main_container(dep: Resource) -> dict:
    containers = pod_spec(dep).get("containers") or []
    return next((c for c in containers if c.get("name") == dep.name), containers[0] if containers else {})


def env_value(rendered: Rendered, container: dict, name: str) -> str | None:
    """A setting's value as the container will see it: env first, then the
    ConfigMaps it loads with envFrom. None when unset or not a literal."""
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e.get("value")
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        cm = rendered.named("ConfigMap", ref) if ref else None
        if cm and name in (cm.obj.get("data") or {}):
            return cm.obj["data"][name]
    return None


def check_probes(report: Report, rendered: Rendered, dep: Resource) -> None:
    """Startup, readiness and liveness are gRPC probes on the gRPC port; readiness
    asks the service's own health name (NOT_SERVING while PostgreSQL or NATS is
    down: out of rotation) and liveness asks "" (a database outage must not
    restart every pod)."""
    where, c = rendered.where(dep), main_container(dep)
    own = HEALTH_NAMES.get(dep.name, f"reseller.v1.<{dep.name}'s service>")
    wanted = {"startupProbe": None, "readinessProbe": own, "livenessProbe": ""}
    for probe_name, service in wanted.items():
        probe = c.get(probe_name)
        grpc = (probe or {}).get("grpc") or {}
        asked = grpc.get("service", "")
        shown = f'service: "{service}"' if service is not None else "no service"
        if not probe:
            report.add(
                where, f"{probe_name} missing", f"add {probe_name}.grpc {{port: {GRPC_PORT}, {shown}}}"
            )
        elif grpc.get("port") != GRPC_PORT:
            report.add(
                where,
                f"{probe_name} is not a gRPC probe on port {GRPC_PORT}",
                f"use {probe_name}.grpc {{port: {GRPC_PORT}, {shown}}}",
            )
        elif probe_name == "readinessProbe" and asked != own:
            report.add(
                where,
                f'readinessProbe asks health name "{asked}", which stays SERVING while PostgreSQL or NATS is down',
                f'set readinessProbe.grpc.service: "{own}"',
            )
        elif probe_name == "livenessProbe" and asked != "":
            report.add(
                where,
                f'livenessProbe asks "{asked}", which turns NOT_SERVING in a database outage and would restart every pod',
                'set livenessProbe.grpc.service: "" (the process is alive)',
            )


def check_security(report: Report, rendered: Rendered, dep: Resource) -> None:
    """The restricted Pod Security Standard plus a read-only root filesystem:
    runAsNonRoot, allowPrivilegeEscalation false, capabilities drop ALL,
    seccompProfile RuntimeDefault, readOnlyRootFilesystem, no host access."""
    where, pod = rendered.where(dep), pod_spec(dep)
    pod_sc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            report.add(where, f"{flag} is true", f"remove {flag}")
    for v in pod.get("volumes") or []:
        if "hostPath" in v:
            report.add(where, f"volume {v.get('name')} is a hostPath", "use an emptyDir, a Secret or a PVC")
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        sc = c.get("securityContext") or {}
        cw = f"{where} container {c.get('name')}"
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            report.add(
                cw, "runAsNonRoot is not true", "set securityContext.runAsNonRoot: true (pod or container)"
            )
        if sc.get("allowPrivilegeEscalation") is not False:
            report.add(
                cw,
                "allowPrivilegeEscalation is not false",
                "set securityContext.allowPrivilegeEscalation: false",
            )
        if sc.get("privileged"):
            report.add(cw, "privileged is true", "remove securityContext.privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            report.add(cw, "capabilities do not drop ALL", 'set securityContext.capabilities.drop: ["ALL"]')
        if caps.get("add"):
            report.add(
                cw, f"capabilities add {caps['add']}", "remove capabilities.add (the programs need none)"
            )
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            report.add(
                cw,
                f"seccompProfile is {seccomp or 'unset'}",
                "set securityContext.seccompProfile.type: RuntimeDefault",
            )
        if sc.get("readOnlyRootFilesystem") is not True:
            report.add(
                cw,
                "readOnlyRootFilesystem is not true",
                "set securityContext.readOnlyRootFilesystem: true (write to the /tmp emptyDir)",
            )


def check_container(report: Report, rendered: Rendered, dep: Resource) -> None:
    """The container runs the service's binary from the portal image, exposes the
    grpc and metrics ports, and has CPU and memory requests and a memory limit."""
    where, c = rendered.where(dep), main_container(dep)
    if (c.get("command") or [None])[0] != dep.name:
        report.add(where, f"command does not run the {dep.name} binary", f'set command: ["{dep.name}"]')
    if not kustomize_lite.split_image(str(c.get("image", "")))[0].endswith("reseller-portal"):
        report.add(
            where,
            f"image {c.get('image')} is not the reseller-portal image",
            "use image reseller-portal (overlays set the tag)",
        )
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for name, number in (("grpc", GRPC_PORT), ("metrics", METRICS_PORT)):
        if ports.get(name) != number:
            report.add(
                where,
                f"no container port {number} named {name}",
                f"add ports: - {{name: {name}, containerPort: {number}}}",
            )
    resources = c.get("resources") or {}
    for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        for key in keys:
            if key not in (resources.get(part) or {}):
                report.add(where, f"no {part}.{key}", f"set resources.{part}.{key}")


def check_settings(report: Report, rendered: Rendered, dep: Resource) -> None:
    """Secrets from the Secret, shared settings from the ConfigMap (envFrom), and
    the per-pod settings the ports and probes depend on."""
    where, c = rendered.where(dep), main_container(dep)
    env = {e.get("name"): e for e in c.get("env") or []}
    for var, key in (("DATABASE_URL", "database-url"), ("AUTH_JWT_SECRET", "auth-jwt-secret")):
        ref = ((env.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") != SECRET or ref.get("key") != key:
            report.add(
                where,
                f"{var} does not come from Secret {SECRET} key {key}",
                f"set env {var}.valueFrom.secretKeyRef {{name: {SECRET}, key: {key}}}",
            )
    if CONFIGMAP not in [(s.get("configMapRef") or {}).get("name") for s in c.get("envFrom") or []]:
        report.add(
            where,
            f"does not load ConfigMap {CONFIGMAP}",
            f"add envFrom: - configMapRef: {{name: {CONFIGMAP}}}",
        )
    literals = {
        "GRPC_ADDR": f"0.0.0.0:{GRPC_PORT}",
        "METRICS_ADDR": f"0.0.0.0:{METRICS_PORT}",
        "LOG_FORMAT": "json",
        **{
            SERVICE_URL_SETTINGS[callee]: f"http://{callee}:{GRPC_PORT}" for callee in CALLS.get(dep.name, [])
        },
    }
    for var, value in literals.items():
        if env_value(rendered, c, var) != value:
            report.add(where, f"{var} is not {value}", f'set env {var}: "{value}"')


def preStop_sleep_seconds(container: dict) -> int | None:
    """Seconds the preStop hook sleeps: `sleep N` (exec, or sh -c) or the native
    sleep action. None when there is no sleep."""
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int((pre["sleep"] or {}).get("seconds", 0))
    command = " ".join(str(part) for part in ((pre.get("exec") or {}).get("command") or []))
    match = re.search(r"(?:^|[\s/])sleep\s+(\d+)", command)
    return int(match.group(1)) if match else None


def check_shutdown_budget(report: Report, rendered: Rendered, dep: Resource) -> None:
    """The preStop sleep (endpoints drop the pod) plus the program's drain
    (SHUTDOWN_GRACE_SECONDS) must end before terminationGracePeriodSeconds, when
    the kubelet sends SIGKILL mid-drain."""
    where, c = rendered.where(dep), main_container(dep)
    sleep = preStop_sleep_seconds(c)
    if sleep is None:
        report.add(
            where,
            "no preStop sleep: the pod stops taking calls while endpoints still route to it",
            'add lifecycle.preStop.exec.command: ["sleep", "5"]',
        )
        sleep = 0
    raw = env_value(rendered, c, "SHUTDOWN_GRACE_SECONDS")
    try:
        drain = int(raw) if raw is not None else DEFAULT_SHUTDOWN_GRACE_SECONDS
    except ValueError:
        report.add(
            where, f"SHUTDOWN_GRACE_SECONDS is {raw!r}, not a number of seconds", 'set it to e.g. "20"'
        )
        return
    grace = pod_spec(dep).get("terminationGracePeriodSeconds", 30)
    if sleep + drain > grace:
        report.add(
            where,
            f"preStop sleep {sleep}s + SHUTDOWN_GRACE_SECONDS {drain}s = {sleep + drain}s exceeds "
            f"terminationGracePeriodSeconds {grace}s: the kubelet kills the pod mid-drain",
            f"raise terminationGracePeriodSeconds to at least {sleep + drain}, or shorten the preStop sleep or SHUTDOWN_GRACE_SECONDS",
        )


def check_topology_spread(report: Report, rendered: Rendered, dep: Resource) -> None:
    """Replicas spread across nodes: a hostname topology spread constraint with
    maxSkew 1 that selects the Deployment's own pods."""
    constraints = pod_spec(dep).get("topologySpreadConstraints") or []
    if not any(
        t.get("topologyKey") == "kubernetes.io/hostname"
        and t.get("maxSkew") == 1
        and selects(t.get("labelSelector"), pod_labels(dep))
        and t.get("labelSelector")
        for t in constraints
    ):
        report.add(
            rendered.where(dep),
            "no topology spread across nodes",
            "add topologySpreadConstraints: - {maxSkew: 1, topologyKey: kubernetes.io/hostname, "
            "whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: <its pod labels>}}",
        )


def check_service_and_pdb(report: Report, rendered: Rendered, dep: Resource) -> None:
    """A Service with the grpc and metrics ports and a PodDisruptionBudget select
    its pods; in an overlay, the PDB must leave a pod to evict (node drains)."""
    where, labels = rendered.where(dep), pod_labels(dep)
    services = [
        s
        for s in rendered.of_kind("Service")
        if (s.obj.get("spec") or {}).get("selector")
        and selects({"matchLabels": s.obj["spec"]["selector"]}, labels)
    ]
    if not services:
        report.add(
            where, "no Service selects its pods", f"add a Service {dep.name} (see base/customer-service.yaml)"
        )
    for s in services:
        ports = {p.get("name"): p.get("port") for p in (s.obj.get("spec") or {}).get("ports") or []}
        for name, number in (("grpc", GRPC_PORT), ("metrics", METRICS_PORT)):
            if ports.get(name) != number:
                report.add(
                    rendered.where(s),
                    f"no port {number} named {name}",
                    f"add ports: - {{name: {name}, port: {number}, targetPort: {name}}}",
                )
    pdbs = [
        p
        for p in rendered.of_kind("PodDisruptionBudget")
        if selects((p.obj.get("spec") or {}).get("selector"), labels)
    ]
    if not pdbs:
        report.add(
            where,
            "no PodDisruptionBudget selects its pods",
            f"add a PodDisruptionBudget {dep.name} with minAvailable: 1",
        )
    if rendered.deployable:
        replicas = min_replicas(rendered, dep)
        for p in pdbs:
            minimum = (p.obj.get("spec") or {}).get("minAvailable")
            if isinstance(minimum, int) and minimum >= replicas:
                report.add(
                    rendered.where(p),
                    f"minAvailable {minimum} with {replicas} replica(s) blocks every node drain",
                    "use maxUnavailable: 1, or run more replicas",
                )


def selected_name(selector: dict | None) -> str | None:
    """The app.kubernetes.io/name a pod selector picks, if it picks one."""
    return ((selector or {}).get("matchLabels") or {}).get("app.kubernetes.io/name")


def port_number(port, container: dict | None = None):
    """A NetworkPolicy port (number or a name of the pod's container ports) as a number."""
    if isinstance(port, int) or container is None:
        return port
    return next((p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == port), port)


def check_network_policies(report: Report, rendered: Rendered, dep: Resource) -> None:
    """Its pods are isolated both ways and reachable only where they must be:
    ingress only to the grpc and metrics ports (its own NetworkPolicy admits
    them); egress only to DNS, PostgreSQL, NATS, the OpenTelemetry collector and
    the services it calls, each rule naming its peers."""
    where, labels, c = rendered.where(dep), pod_labels(dep), main_container(dep)
    policies = [
        p
        for p in rendered.of_kind("NetworkPolicy")
        if selects((p.obj.get("spec") or {}).get("podSelector"), labels)
    ]
    own = [p for p in policies if selected_name(p.obj["spec"].get("podSelector")) == dep.name]
    if not own:
        report.add(
            where,
            f"has no NetworkPolicy of its own (none selects app.kubernetes.io/name={dep.name})",
            f"add NetworkPolicy {dep.name} admitting its grpc and metrics ports (see base/customer-service.yaml)",
        )
    types = {t for p in policies for t in p.obj["spec"].get("policyTypes") or ["Ingress"]}
    for direction in ("Ingress", "Egress"):
        if direction not in types:
            report.add(
                where,
                f"no NetworkPolicy isolates its {direction.lower()}: everything is allowed",
                "keep reseller-portal-default-deny (base/network-policies.yaml) selecting its pods",
            )

    admitted = set()
    for p in policies:
        for rule in p.obj["spec"].get("ingress") or []:
            if not rule.get("ports"):
                report.add(
                    rendered.where(p),
                    "an ingress rule admits every port",
                    "list the grpc and/or metrics port in it",
                )
                continue
            for port in rule["ports"]:
                number = port_number(port.get("port"), c)
                admitted.add(number)
                if number not in (GRPC_PORT, METRICS_PORT):
                    report.add(
                        rendered.where(p),
                        f"ingress to port {port.get('port')} of {dep.name}",
                        "admit only the grpc and metrics ports",
                    )
    for number, name in ((GRPC_PORT, "grpc"), (METRICS_PORT, "metrics")):
        if number not in admitted:
            report.add(
                where,
                f"no NetworkPolicy admits its {name} port {number}",
                f"admit port {name} in NetworkPolicy {dep.name}",
            )

    check_egress(report, rendered, dep, policies)


def check_egress(report: Report, rendered: Rendered, dep: Resource, policies: list[Resource]) -> None:
    """Egress rules name their peers and ports, stay within the allowed set, and
    cover what the service needs."""
    callees = CALLS.get(dep.name, [])
    required = dict(REQUIRED_EGRESS)
    otlp = env_value(rendered, main_container(dep), "OTEL_EXPORTER_OTLP_ENDPOINT")
    if otlp:
        port = re.search(r"^\w+://[^/:]+:(\d+)", otlp)
        required[(int(port.group(1)) if port else OTLP_PORT, "TCP")] = "the OpenTelemetry collector"
    allowed = set(required) | {(53, "TCP"), (OTLP_PORT, "TCP")} | ({(GRPC_PORT, "TCP")} if callees else set())
    opened: set = set()  # (port, protocol) and (callee, port) the rules open
    for p in policies:
        for rule in p.obj["spec"].get("egress") or []:
            ports = rule.get("ports") or []
            if not ports or not rule.get("to"):
                report.add(
                    rendered.where(p),
                    "an egress rule without ports or peers allows everything it leaves out",
                    "name the peers (to:) and the ports",
                )
                continue
            for port in ports:
                pair = (port.get("port"), port.get("protocol", "TCP"))
                if pair not in allowed:
                    report.add(
                        rendered.where(p),
                        f"egress from {dep.name} to port {pair[0]}/{pair[1]}",
                        "allow only DNS, PostgreSQL, NATS, the OTel collector and the services it calls",
                    )
                elif pair == (GRPC_PORT, "TCP"):
                    targets = {selected_name(peer.get("podSelector")) for peer in rule["to"]}
                    if not targets <= set(callees):
                        report.add(
                            rendered.where(p),
                            f"egress from {dep.name} to gRPC port {GRPC_PORT} of {sorted(map(str, targets - set(callees)))}",
                            f"allow only the services it calls: {callees}",
                        )
                    opened |= {(t, GRPC_PORT) for t in targets}
                opened.add(pair)
    for pair, what in required.items():
        if pair not in opened:
            report.add(
                rendered.where(dep),
                f"no egress to {what} ({pair[0]}/{pair[1]})",
                "allow it in base/network-policies.yaml",
            )
    for callee in callees:
        if (callee, GRPC_PORT) not in opened:
            report.add(
                rendered.where(dep),
                f"no egress to {callee}:{GRPC_PORT}, which it calls",
                f"add an egress rule to {callee}'s pods in NetworkPolicy {dep.name}",
            )


# --- 4. overlays: replicas, settings, connection budget -----------------------------------


def hpa_for(rendered: Rendered, dep: Resource) -> Resource | None:
    return next(
        (
            h
            for h in rendered.of_kind("HorizontalPodAutoscaler")
            if ((h.obj.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == dep.name
        ),
        None,
    )


def min_replicas(rendered: Rendered, dep: Resource) -> int:
    hpa = hpa_for(rendered, dep)
    return hpa.obj["spec"].get("minReplicas", 1) if hpa else (dep.obj.get("spec") or {}).get("replicas", 1)


def max_pods(rendered: Rendered, dep: Resource) -> int:
    """Most pods a Deployment can run at once: its replicas (or its HPA's
    maximum) plus the surge of a rolling update."""
    hpa = hpa_for(rendered, dep)
    replicas = hpa.obj["spec"]["maxReplicas"] if hpa else (dep.obj.get("spec") or {}).get("replicas", 1)
    surge = (((dep.obj.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}).get(
        "maxSurge", "25%"
    )
    if isinstance(surge, str) and surge.endswith("%"):
        surge = math.ceil(replicas * int(surge[:-1]) / 100)
    return replicas + int(surge)


def check_hpas(report: Report, rendered: Rendered) -> None:
    """Every HPA scales an existing Deployment that sets no replicas of its own
    (each apply would reset the HPA's count)."""
    for h in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = (h.obj.get("spec") or {}).get("scaleTargetRef") or {}
        target = rendered.named("Deployment", ref.get("name", ""))
        if ref.get("kind") != "Deployment" or target is None:
            report.add(
                rendered.where(h),
                f"targets missing Deployment {ref.get('name')}",
                "point scaleTargetRef at one of the services",
            )
        elif "replicas" in (target.obj.get("spec") or {}):
            report.add(
                rendered.where(h),
                f"Deployment {target.name} also sets replicas",
                f"drop {target.name} from the overlay's replicas list",
            )


# The samplers the OpenTelemetry SDK reads from OTEL_TRACES_SAMPLER (opentelemetry_sdk 0.33).
OTEL_SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)


def check_shared_settings(report: Report, rendered: Rendered) -> None:
    """The ConfigMap holds the shared settings, each in a form the programs parse."""
    cm = rendered.named("ConfigMap", CONFIGMAP)
    if cm is None:
        if rendered.of_kind("Deployment"):
            report.add(
                rendered.label, f"no ConfigMap {CONFIGMAP}", "keep base/configmap.yaml in the kustomization"
            )
        return
    data, where = rendered.config(), rendered.where(cm)
    for key in ("NATS_URL", "NATS_STREAM_REPLICAS", "GRPC_MAX_CONNECTION_AGE_SECONDS", "RUST_LOG"):
        if key not in data:
            report.add(where, f"no {key}", f"add {key} (see base/configmap.yaml)")
    for url in str(data.get("NATS_URL", "")).split(",") if "NATS_URL" in data else []:
        if not re.fullmatch(r"nats://[A-Za-z0-9.-]+:\d+", url.strip()):
            report.add(
                where,
                f"NATS_URL entry {url!r} is not nats://host:port",
                "list the servers as nats://host:port,nats://host:port",
            )
    for key, low, high in (
        ("NATS_STREAM_REPLICAS", 1, 5),
        ("GRPC_MAX_CONNECTION_AGE_SECONDS", 1, 86400),
        ("DATABASE_MAX_CONNECTIONS", 1, 1000),
    ):
        if key in data and not (str(data[key]).isdigit() and low <= int(data[key]) <= high):
            report.add(where, f"{key} is {data[key]!r}", f"set a whole number from {low} to {high}")
    # The SDK falls back to recording every trace, with only a warning in the log, on a
    # sampler it does not know or a ratio it cannot read.
    sampler = data.get("OTEL_TRACES_SAMPLER")
    if sampler is not None and sampler not in OTEL_SAMPLERS:
        report.add(
            where,
            f"OTEL_TRACES_SAMPLER is {sampler!r}",
            "set one of " + ", ".join(sorted(OTEL_SAMPLERS)),
        )
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        arg = data.get("OTEL_TRACES_SAMPLER_ARG")
        try:
            ratio_ok = arg is not None and 0.0 <= float(arg) <= 1.0
        except ValueError:
            ratio_ok = False
        if not ratio_ok:
            report.add(
                where,
                f"OTEL_TRACES_SAMPLER is {sampler} and OTEL_TRACES_SAMPLER_ARG is {arg!r}",
                'set OTEL_TRACES_SAMPLER_ARG to a ratio from 0 to 1, e.g. "0.1"',
            )


def check_production(report: Report, rendered: Rendered) -> None:
    """prod* overlays run the deployed shape: >= 2 replicas of every service (or
    an HPA with minReplicas >= 2), and streams replicated on all three NATS
    servers listed in NATS_URL."""
    for dep in rendered.of_kind("Deployment"):
        if min_replicas(rendered, dep) < 2:
            report.add(
                rendered.where(dep),
                f"runs {min_replicas(rendered, dep)} replica(s) in production",
                "set replicas (or the HPA's minReplicas) to 2 or more",
            )
    data = rendered.config()
    if data.get("NATS_STREAM_REPLICAS") != "3":
        report.add(
            f"{rendered.label}: ConfigMap {CONFIGMAP}",
            f"NATS_STREAM_REPLICAS is {data.get('NATS_STREAM_REPLICAS')!r} in production",
            'patch it to "3" (overlays/prod/stream-replicas.yaml)',
        )
    if len(str(data.get("NATS_URL", "")).split(",")) < 3:
        report.add(
            f"{rendered.label}: ConfigMap {CONFIGMAP}",
            "NATS_URL lists fewer than three servers in production",
            "list all three NATS servers",
        )


def check_connection_budget(report: Report, rendered: Rendered) -> None:
    """pods x (DATABASE_MAX_CONNECTIONS + the relay's two) at the most pods the
    overlay can run (HPA maxima plus rolling-update surge) fits in the
    CloudNativePG cluster's max_connections, less reserved and headroom."""
    cluster = rendered.named("Cluster", CNPG_CLUSTER)
    if cluster is None or not rendered.deployable:
        return
    params = ((cluster.obj.get("spec") or {}).get("postgresql") or {}).get("parameters") or {}
    max_connections = int(params.get("max_connections", 100))
    usable = max_connections - int(params.get("superuser_reserved_connections", 3)) - POSTGRES_HEADROOM
    need, parts = 0, []
    for dep in rendered.of_kind("Deployment"):
        pool = env_value(rendered, main_container(dep), "DATABASE_MAX_CONNECTIONS")
        per_pod = (
            int(pool) if pool and pool.isdigit() else DEFAULT_DATABASE_MAX_CONNECTIONS
        ) + CONNECTIONS_OUTSIDE_POOL
        pods = max_pods(rendered, dep)
        need += pods * per_pod
        parts.append(f"{dep.name} {pods}x{per_pod}")
    summary = f"{need} connections at most ({', '.join(parts)}) of {usable} usable (max_connections {max_connections})"
    report.notes.append(f"{rendered.label}: PostgreSQL budget: {summary}")
    if need > usable:
        report.add(
            rendered.where(cluster),
            f"connection budget exceeded: {summary}",
            "raise max_connections, lower DATABASE_MAX_CONNECTIONS, or lower the HPAs' maxReplicas",
        )


# --- 5. the NATS Helm values ----------------------------------------------------------


def _free_form(default) -> bool:
    return default == {} or default == []


def check_values_against_chart(report: Report, where: str, ours, chart, path: str = "") -> None:
    """Every key of our values exists in the chart's values.yaml with the same
    type (the chart has no values.schema.json; its defaults are its schema).
    Below an empty default ({} or []) the chart takes anything (merge, env...)."""
    for key, value in ours.items():
        here = f"{path}.{key}" if path else key
        if not isinstance(chart, dict) or key not in chart:
            report.add(
                where,
                f"{here} is not a value of the NATS chart",
                "fix the key (see deploy/k8s/vendor/nats-chart/values.yaml)",
            )
            continue
        default = chart[key]
        if _free_form(default) or default is None:
            if default is None and isinstance(value, (dict, list)):
                report.add(
                    where,
                    f"{here} is a {type(value).__name__}, the chart expects a scalar",
                    "give it a scalar",
                )
            continue
        if type(value) is not type(default):
            report.add(
                where,
                f"{here} is a {type(value).__name__}, the chart expects a {type(default).__name__}",
                f"give {here} a {type(default).__name__} like {default!r}",
            )
        elif isinstance(value, dict):
            check_values_against_chart(report, where, value, default, here)


def _dig(tree, dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def check_nats_values(report: Report, root: Path) -> None:
    """nats/values.yaml fits the chart, and asks for what the portal relies on:
    three clustered servers, JetStream on file storage with a sized volume,
    fsync on every write (a 2.10+ server setting the image must have)."""
    path, chart_path = root / "nats" / "values.yaml", root / "vendor" / "nats-chart" / "values.yaml"
    where = str(path.relative_to(root))
    if not path.is_file():
        report.add(where, "missing", "restore the NATS chart values file")
        return
    ours = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    chart = yaml.safe_load(chart_path.read_text(encoding="utf-8"))
    check_values_against_chart(report, where, ours, chart)
    merged = lambda key: _dig(ours, key) if _dig(ours, key) is not None else _dig(chart, key)  # noqa: E731
    wanted = {
        "config.cluster.enabled": True,
        "config.cluster.replicas": 3,
        "config.jetstream.enabled": True,
        "config.jetstream.fileStore.enabled": True,
        "config.jetstream.fileStore.pvc.enabled": True,
        "config.jetstream.merge.sync_interval": "always",
    }
    for key, value in wanted.items():
        if merged(key) != value:
            report.add(where, f"{key} is {merged(key)!r}", f"set {key}: {value}")
    if not re.fullmatch(r"\d+(\.\d+)?[KMGT]i", str(merged("config.jetstream.fileStore.pvc.size"))):
        report.add(
            where,
            "config.jetstream.fileStore.pvc.size is not a volume size",
            "set it, e.g. 50Gi (deploy/SCALING.md)",
        )
    tag = str(merged("container.image.tag"))
    version = tuple(int(x) for x in re.findall(r"\d+", tag)[:2])
    if version < (2, 10):
        report.add(
            where,
            f"image tag {tag} is older than NATS 2.10, which has no sync_interval",
            "use the chart's default image or a 2.10+ tag",
        )


# --- 6. monitoring: generated objects, alerts and their runbooks ---------------------------

SEVERITIES = ("critical", "warning")
RUNBOOK_PREFIX = "deploy/README.md#"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation other
    than `-` and `_` dropped, spaces to dashes."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def check_monitoring(report: Report, root: Path) -> None:
    """The generated monitoring objects match their sources; every alert of the
    rule file is actionable: a severity, a summary, a description, and a
    runbook_url naming a heading of deploy/README.md."""
    try:
        out_of_date = gen_monitoring.stale(root)
    except (OSError, ValueError, yaml.YAMLError) as e:
        report.add("monitoring", f"cannot generate the monitoring objects: {e}", "fix the source it names")
        return
    for rel in out_of_date:
        report.add(
            str(rel),
            "out of date with its source (deploy/monitoring/reseller-alerts.rules.yml or monitoring/grafana-dashboard.json)",
            "run deploy/k8s/validate.sh --regenerate and commit the result",
        )
    readme = root.parent / "README.md"
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in readme.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    rules_file = root / gen_monitoring.RULES
    where = "deploy/monitoring/reseller-alerts.rules.yml"
    groups = (yaml.safe_load(rules_file.read_text(encoding="utf-8")) or {}).get("groups") or []
    for rule in (r for g in groups for r in g.get("rules") or [] if "alert" in r):
        alert, annotations = rule["alert"], rule.get("annotations") or {}
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            report.add(f"{where}: {alert}", "no severity label", f"set labels.severity to one of {SEVERITIES}")
        for key in ("summary", "description"):
            if not annotations.get(key):
                report.add(f"{where}: {alert}", f"no {key} annotation", f"add annotations.{key}")
        url = str(annotations.get("runbook_url", ""))
        if not url.startswith(RUNBOOK_PREFIX) or url[len(RUNBOOK_PREFIX) :] not in anchors:
            report.add(
                f"{where}: {alert}",
                f"runbook_url {url!r} names no heading of deploy/README.md",
                f'add a heading "{alert}" under "Alerts and runbooks" in deploy/README.md and set '
                f"runbook_url: {RUNBOOK_PREFIX}{github_anchor(alert)}",
            )


# --- driving it ---------------------------------------------------------------------


def kustomization_dirs(root: Path) -> list[Path]:
    dirs = {p.parent for name in kustomize_lite.KUSTOMIZATION_NAMES for p in root.rglob(name)}
    return sorted(d for d in dirs if "vendor" not in d.relative_to(root).parts)


def check_unlisted_files(report: Report, root: Path) -> None:
    """Every manifest and patch is listed by some kustomization: a file nobody
    lists is never applied (and never validated)."""
    listed = set()
    for directory in kustomization_dirs(root):
        k = yaml.safe_load(kustomize_lite.kustomization_file(directory).read_text(encoding="utf-8")) or {}
        listed |= {(directory / e).resolve() for e in k.get("resources") or []}
        listed |= {(directory / p["path"]).resolve() for p in k.get("patches") or [] if "path" in p}
    for path in sorted(p for ext in ("*.yaml", "*.yml") for p in root.rglob(ext)):
        rel = str(path.relative_to(root))
        if (
            path.name in kustomize_lite.KUSTOMIZATION_NAMES
            or rel.startswith(NOT_KUSTOMIZED)
            or path.resolve() in listed
        ):
            continue
        report.add(
            rel, "no kustomization lists it", "add it to a kustomization's resources or patches, or delete it"
        )


def check_rendered(report: Report, rendered: Rendered) -> None:
    """All checks of one rendered kustomization."""
    for r in rendered.resources:
        check_schema(report, rendered, r)
    for dep in rendered.of_kind("Deployment"):
        for check in (
            check_probes,
            check_security,
            check_container,
            check_settings,
            check_shutdown_budget,
            check_topology_spread,
            check_service_and_pdb,
            check_network_policies,
        ):
            check(report, rendered, dep)
    check_hpas(report, rendered)
    check_shared_settings(report, rendered)
    if rendered.production:
        check_production(report, rendered)
    check_connection_budget(report, rendered)


def run(root: Path = HERE) -> Report:
    """Validates the tree under `root` (deploy/k8s or a copy of it)."""
    report = Report()
    for directory in kustomization_dirs(root):
        label = str(directory.relative_to(root))
        try:
            resources = kustomize_lite.render(directory, root)
        except (RenderError, yaml.YAMLError) as e:
            report.add(label, f"does not render: {e}", "fix the kustomization or the file it names")
            continue
        check_rendered(report, Rendered(label, resources))
        report.notes.append(f"{label}: {len(resources)} objects")
    check_unlisted_files(report, root)
    check_nats_values(report, root)
    check_monitoring(report, root)
    return report


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else HERE
    report = run(root)
    for note in report.notes:
        print(f"  {note}")
    if report.problems:
        labels = {str(d.relative_to(root)) for d in kustomization_dirs(root)}
        grouped = report.grouped(labels)
        print(f"{len(grouped)} problem(s):", file=sys.stderr)
        for p in grouped:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        f"ok: deploy/k8s valid against Kubernetes {KUBERNETES_VERSION}, the vendored CRDs and the NATS chart's values"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
