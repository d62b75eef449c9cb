#!/usr/bin/env python3
"""Offline checks for the kustomize tree under deploy/k8s (no cluster needed).

1. Every kustomization's resources/patches point at files or directories
   that exist.
2. Every YAML file parses; every manifest has apiVersion, kind, metadata.name.
3. Every Deployment follows the house rules: gRPC readiness/liveness probes on
   port 50051, resource requests and limits, a locked-down securityContext, the
   settings from the Secret/ConfigMap, a Service and a PodDisruptionBudget
   that select its pods.
4. If `kubectl` or `kustomize` is on PATH, base and every overlay are rendered
   and the rendered output is checked again (patches applied, HPAs target
   real Deployments, PDBs don't block every drain).

Usage: python3 deploy/k8s/validate.py   (exit status 1 on any problem)
Needs PyYAML (`pip install pyyaml` or `apt-get install python3-yaml`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - environment problem, not a finding
    sys.exit("validate.py needs PyYAML: pip install pyyaml (or apt-get install python3-yaml)")

ROOT = Path(__file__).resolve().parent
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
GRPC_PORT = 50051
SECRET = "reseller-portal-secrets"
CONFIGMAP = "reseller-portal-config"
# Services that call customer-service and so need its address.
NEEDS_CUSTOMER_URL = {"device-service", "msp-link-service"}

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT.parent.parent))
    except ValueError:
        return str(path)


def load_docs(path: Path) -> list:
    """All non-empty YAML documents of a file; records a problem if it doesn't parse."""
    try:
        with path.open(encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        problem(rel(path), f"does not parse: {e}")
        return []


def kustomization_in(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


# --- 1. references ------------------------------------------------------------


def check_kustomization(path: Path, patch_files: set[Path], resource_files: set[Path]) -> None:
    docs = load_docs(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        problem(rel(path), "expected exactly one mapping")
        return
    k = docs[0]
    base = path.parent

    def must_exist(entry: str, key: str, allow_dir: bool) -> Path | None:
        if "://" in entry or entry.startswith("github.com/"):
            return None  # remote bases can't be checked offline
        target = (base / entry).resolve()
        if target.is_file():
            return target
        if allow_dir and target.is_dir():
            if kustomization_in(target) is None:
                problem(rel(path), f"{key}: directory {entry} has no kustomization.yaml")
            return None
        problem(rel(path), f"{key}: {entry} does not exist")
        return None

    for key in ("resources", "components"):
        for entry in k.get(key) or []:
            found = must_exist(entry, key, allow_dir=True)
            if found is not None:
                resource_files.add(found)
    for entry in k.get("patchesStrategicMerge") or []:
        if isinstance(entry, str) and "\n" not in entry:
            found = must_exist(entry, "patchesStrategicMerge", allow_dir=False)
            if found is not None:
                patch_files.add(found)
    for key in ("patches", "patchesJson6902"):
        for entry in k.get(key) or []:
            if isinstance(entry, dict) and "path" in entry:
                found = must_exist(entry["path"], key, allow_dir=False)
                if found is not None:
                    patch_files.add(found)
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for entry in gen.get("files") or []:
            must_exist(entry.split("=", 1)[-1], "generator files", allow_dir=False)


# --- 2. manifests ---------------------------------------------------------------


def check_manifest_shape(path: Path, docs: list) -> None:
    for i, doc in enumerate(docs):
        where = f"{rel(path)} doc {i + 1}"
        if not isinstance(doc, dict):
            problem(where, "not a mapping (a patch no kustomization references?)")
            continue
        for key in ("apiVersion", "kind"):
            if not doc.get(key):
                problem(where, f"missing {key}")
        if not (doc.get("metadata") or {}).get("name"):
            problem(where, "missing metadata.name")


# --- 3. house rules ----------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def probe_ok(probe: dict | None) -> bool:
    return bool(probe) and (probe.get("grpc") or {}).get("port") == GRPC_PORT


def check_env(where: str, name: str, env: list, configmaps: dict) -> None:
    by_name = {e.get("name"): e for e in env}

    def from_secret(var: str, key: str) -> None:
        ref = ((by_name.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") != SECRET or ref.get("key") != key:
            problem(where, f"{var} must come from Secret {SECRET} key {key}")

    from_secret("DATABASE_URL", "database-url")
    from_secret("AUTH_JWT_SECRET", "auth-jwt-secret")

    ref = ((by_name.get("NATS_URL") or {}).get("valueFrom") or {}).get("configMapKeyRef") or {}
    if ref.get("name") != CONFIGMAP:
        problem(where, f"NATS_URL must come from ConfigMap {CONFIGMAP}")
    for var in ("NATS_URL", "RUST_LOG"):
        ref = ((by_name.get(var) or {}).get("valueFrom") or {}).get("configMapKeyRef")
        if ref and configmaps and ref.get("key") not in configmaps.get(ref.get("name"), {}):
            if not ref.get("optional"):
                problem(where, f"{var}: ConfigMap {ref.get('name')} has no key {ref.get('key')}")

    if (by_name.get("GRPC_ADDR") or {}).get("value") != f"0.0.0.0:{GRPC_PORT}":
        problem(where, f"GRPC_ADDR must be 0.0.0.0:{GRPC_PORT}")
    if (by_name.get("LOG_FORMAT") or {}).get("value") != "json":
        problem(where, "LOG_FORMAT must be json")
    if name in NEEDS_CUSTOMER_URL:
        if (by_name.get("CUSTOMER_SERVICE_URL") or {}).get("value") != f"http://customer-service:{GRPC_PORT}":
            problem(where, "CUSTOMER_SERVICE_URL must be http://customer-service:50051")


def check_objects(label: str, objects: list[dict], rendered: bool) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        if isinstance(o, dict):
            by_kind.setdefault(o.get("kind", ""), []).append(o)
    configmaps = {
        (c.get("metadata") or {}).get("name"): c.get("data") or {} for c in by_kind.get("ConfigMap", [])
    }
    if CONFIGMAP not in configmaps:
        problem(label, f"no ConfigMap {CONFIGMAP}")
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        problem(label, "no Deployments")

    for d in deployments:
        name = d["metadata"]["name"]
        where = f"{label}: Deployment {name}"
        spec = d.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        pod_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selects((spec.get("selector") or {}).get("matchLabels") or {}, pod_labels):
            problem(where, "selector does not match the pod template labels")
        if pod.get("terminationGracePeriodSeconds") != 30:
            problem(where, "terminationGracePeriodSeconds must be 30")
        if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
            problem(where, "pod securityContext.runAsNonRoot must be true")
        containers = pod.get("containers") or []
        if not containers:
            problem(where, "no containers")
        for c in containers:
            cw = f"{where} container {c.get('name')}"
            if (c.get("command") or [None])[0] != name:
                problem(cw, f"command must run the {name} binary")
            if not str(c.get("image", "")).startswith("reseller-portal"):
                problem(cw, "image must be reseller-portal")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            if ports.get("grpc") != GRPC_PORT:
                problem(cw, f"needs containerPort {GRPC_PORT} named grpc")
            for probe in ("readinessProbe", "livenessProbe"):
                if not probe_ok(c.get(probe)):
                    problem(cw, f"{probe} must be a grpc probe on port {GRPC_PORT}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if not (res.get(part) or {}).get(what):
                        problem(cw, f"resources.{part}.{what} missing")
            sc = c.get("securityContext") or {}
            if not sc.get("runAsNonRoot"):
                problem(cw, "securityContext.runAsNonRoot must be true")
            if not sc.get("readOnlyRootFilesystem"):
                problem(cw, "securityContext.readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(cw, "securityContext.allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problem(cw, "securityContext.capabilities.drop must include ALL")
            check_env(cw, name, c.get("env") or [], configmaps)

        services = [s for s in by_kind.get("Service", []) if selects((s.get("spec") or {}).get("selector") or {}, pod_labels)]
        if not services:
            problem(where, "no Service selects its pods")
        for s in services:
            ports = {p.get("name"): p.get("port") for p in (s.get("spec") or {}).get("ports") or []}
            if ports.get("grpc") != GRPC_PORT:
                problem(f"{label}: Service {s['metadata']['name']}", f"needs port {GRPC_PORT} named grpc")

        pdbs = [
            p for p in by_kind.get("PodDisruptionBudget", [])
            if selects(((p.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}, pod_labels)
        ]
        if not pdbs:
            problem(where, "no PodDisruptionBudget selects its pods")

        if rendered:
            # A PDB that needs as many pods as there are replicas blocks every drain.
            hpa = [h for h in hpas if (h["spec"].get("scaleTargetRef") or {}).get("name") == name]
            replicas = hpa[0]["spec"].get("minReplicas", 1) if hpa else spec.get("replicas", 1)
            for p in pdbs:
                min_available = (p.get("spec") or {}).get("minAvailable")
                if isinstance(min_available, int) and min_available >= replicas:
                    problem(where, f"PDB minAvailable {min_available} with {replicas} replica(s) blocks node drains")

    names = {d["metadata"]["name"] for d in deployments}
    for h in hpas:
        ref = h["spec"].get("scaleTargetRef") or {}
        if ref.get("kind") != "Deployment" or ref.get("name") not in names:
            problem(f"{label}: HPA {h['metadata']['name']}", f"targets missing Deployment {ref.get('name')}")
        if rendered:
            target = next((d for d in deployments if d["metadata"]["name"] == ref.get("name")), None)
            if target is not None and "replicas" in target["spec"]:
                problem(f"{label}: HPA {h['metadata']['name']}", "its Deployment also sets replicas; each apply would reset the HPA's count")


# --- 4. rendering --------------------------------------------------------------------


def renderer() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def main() -> int:
    kustomizations = sorted(p for name in KUSTOMIZATION_NAMES for p in ROOT.rglob(name))
    patch_files: set[Path] = set()
    resource_files: set[Path] = set()
    for k in kustomizations:
        check_kustomization(k, patch_files, resource_files)

    yaml_files = sorted(p for ext in ("*.yaml", "*.yml") for p in ROOT.rglob(ext))
    parsed: dict[Path, list] = {}
    for path in yaml_files:
        docs = load_docs(path)
        parsed[path.resolve()] = docs
        if path.name in KUSTOMIZATION_NAMES or path.resolve() in patch_files:
            continue  # kustomizations and patches are not whole manifests
        check_manifest_shape(path, docs)

    # House rules on the base as written (resources of base/ only).
    base = ROOT / "base"
    base_k = kustomization_in(base)
    if base_k is not None:
        base_resources = [
            (base / r).resolve() for r in (yaml.safe_load(base_k.read_text()) or {}).get("resources") or []
        ]
        objects = [d for r in base_resources if r.is_file() for d in parsed.get(r, [])]
        check_objects("base (as written)", objects, rendered=False)

    tool = renderer()
    rendered_dirs = [k.parent for k in kustomizations]
    if tool is None:
        print("note: neither kubectl nor kustomize found; skipped rendering overlays", file=sys.stderr)
    else:
        for directory in rendered_dirs:
            label = f"{rel(directory)} (rendered)"
            out = subprocess.run([*tool, str(directory)], capture_output=True, text=True)
            if out.returncode != 0:
                problem(label, f"{' '.join(tool)} failed: {out.stderr.strip()}")
                continue
            objects = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
            # The base alone is never deployed, so drain-blocking is judged on overlays.
            check_objects(label, objects, rendered=directory != base)

    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    rendered_note = f", rendered {len(rendered_dirs)} kustomizations with {' '.join(tool)}" if tool else ""
    print(f"ok: {len(yaml_files)} YAML files, {len(kustomizations)} kustomizations{rendered_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
