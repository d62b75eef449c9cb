"""A small subset of kustomize: enough to render deploy/k8s without kubectl.

It supports what this tree uses and refuses anything else by name, so a
kustomization that grows a new feature fails loudly here instead of rendering
wrong:

- Kustomization fields: `resources` (files and directories), `labels`,
  `images`, `replicas`, `patches` (strategic merge or JSON 6902, from `path` or
  inline `patch`, with or without `target`).
- Transformers run in kustomize's order: patches, labels, replicas, images.
- Strategic merge follows Kubernetes' rules for the lists a patch here may touch
  (containers, env, ports, volumes, volume mounts, topology spread constraints:
  merged by their key); every other list is replaced whole, `null` deletes a key,
  and `$patch: delete` deletes an object or a list item.

test_validate.py renders every kustomization with this module and with
`kubectl kustomize` (when it is on PATH) and requires the same objects.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "labels", "images", "replicas", "patches"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SCALABLE_KINDS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}

# Strategic-merge keys of the lists a patch may merge (Kubernetes' patchMergeKey),
# by path inside the object; "[]" stands for any element of a list.
_POD = "spec.template.spec"
WORKLOAD_MERGE_KEYS = {
    f"{_POD}.containers": "name",
    f"{_POD}.initContainers": "name",
    f"{_POD}.volumes": "name",
    f"{_POD}.imagePullSecrets": "name",
    f"{_POD}.topologySpreadConstraints": "topologyKey",
    **{f"{_POD}.{c}[].env": "name" for c in ("containers", "initContainers")},
    **{f"{_POD}.{c}[].ports": "containerPort" for c in ("containers", "initContainers")},
    **{f"{_POD}.{c}[].volumeMounts": "mountPath" for c in ("containers", "initContainers")},
}
SERVICE_MERGE_KEYS = {"spec.ports": "port"}


# libyaml's parser when PyYAML has it (its wheels do): ten times the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> list:
    """The non-empty documents of a YAML text (a fresh copy: callers may edit it)."""
    return copy.deepcopy(_parse_cached(text))


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> tuple:
    # Keyed by content, so base files are parsed once for all overlays that use them.
    return tuple(d for d in yaml.load_all(text, Loader=_LOADER) if d is not None)


class RenderError(Exception):
    """A kustomization this renderer cannot (or kustomize would not) render."""


@dataclass
class Resource:
    """One rendered object and where it came from."""

    obj: dict
    source: str  # the file that defined it, relative to the rendered tree's root
    patched_by: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "")

    @property
    def name(self) -> str:
        return (self.obj.get("metadata") or {}).get("name", "")

    def describe(self) -> str:
        patched = f" (patched by {', '.join(self.patched_by)})" if self.patched_by else ""
        return f"{self.source}: {self.kind}/{self.name}{patched}"


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def render(directory: Path, root: Path | None = None) -> list[Resource]:
    """Renders the kustomization in `directory` (what `kubectl kustomize` prints)."""
    root = root or directory
    kfile = kustomization_file(directory)
    if kfile is None:
        raise RenderError(f"{_rel(directory, root)}: no kustomization.yaml")
    where = _rel(kfile, root)
    k = _load_kustomization(kfile, where)

    resources: list[Resource] = []
    for entry in k.get("resources") or []:
        resources.extend(_load_entry(directory, entry, root, where))
    _refuse_duplicates(resources, where)

    for patch in k.get("patches") or []:
        resources = _apply_patch(resources, patch, directory, root, where)
    for entry in k.get("labels") or []:
        _apply_labels(resources, entry, where)
    for entry in k.get("replicas") or []:
        _apply_replicas(resources, entry, where)
    for entry in k.get("images") or []:
        _apply_image(resources, entry)
    return resources


# --- loading --------------------------------------------------------------------


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _load_kustomization(kfile: Path, where: str) -> dict:
    docs = parse_yaml(kfile.read_text(encoding="utf-8"))
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{where}: expected one mapping")
    k = docs[0]
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{where}: kind {k.get('kind')} is not supported (only Kustomization)")
    unsupported = sorted(set(k) - SUPPORTED_FIELDS)
    if unsupported:
        raise RenderError(
            f"{where}: field(s) {', '.join(unsupported)} not supported by kustomize_lite.py; "
            "use the supported ones or extend the renderer (and its comparison test)"
        )
    return k


def _load_entry(directory: Path, entry: str, root: Path, where: str) -> list[Resource]:
    if "://" in entry or entry.startswith("github.com/"):
        raise RenderError(f"{where}: remote resource {entry} cannot be rendered offline")
    target = (directory / entry).resolve()
    if target.is_dir():
        return render(target, root)
    if target.is_file():
        return load_objects(target, root)
    raise RenderError(f"{where}: resources: {entry} does not exist")


def load_objects(path: Path, root: Path) -> list[Resource]:
    """The Kubernetes objects of a YAML file (empty documents skipped)."""
    source = _rel(path, root)
    try:
        docs = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RenderError(f"{source}: does not parse: {e}") from e
    out = []
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or not doc.get("kind") or not (doc.get("metadata") or {}).get("name"):
            raise RenderError(
                f"{source} document {i}: not a Kubernetes object (needs kind and metadata.name)"
            )
        out.append(Resource(doc, source))
    return out


def _refuse_duplicates(resources: list[Resource], where: str) -> None:
    seen: dict[tuple, Resource] = {}
    for r in resources:
        key = (r.kind, r.name, (r.obj.get("metadata") or {}).get("namespace"))
        if key in seen:
            raise RenderError(f"{where}: {r.kind}/{r.name} defined twice ({seen[key].source}, {r.source})")
        seen[key] = r


# --- patches ----------------------------------------------------------------------


def _apply_patch(
    resources: list[Resource], entry: dict, directory: Path, root: Path, where: str
) -> list[Resource]:
    """One `patches` entry: a JSON 6902 patch (a YAML list) or strategic-merge
    patches (mappings; several documents allowed)."""
    label, docs = _read_patch(entry, directory, root, where)
    target = entry.get("target")
    if len(docs) == 1 and isinstance(docs[0], list):
        if not target:
            raise RenderError(f"{label}: a JSON 6902 patch needs a target")
        for r in _select(resources, target, label):
            for op in docs[0]:
                _json6902(r.obj, op, label)
            r.patched_by.append(label)
        return resources
    for doc in docs:
        if not isinstance(doc, dict):
            raise RenderError(f"{label}: a strategic-merge patch must be a mapping")
        own_id = {"kind": doc.get("kind"), "name": (doc.get("metadata") or {}).get("name")}
        matched = _select(resources, target or own_id, label)
        if doc.get("$patch") == "delete":
            doomed = {id(r) for r in matched}
            resources = [r for r in resources if id(r) not in doomed]
        else:
            for r in matched:
                _strategic_merge(r.obj, _without_identity(doc), "", _merge_keys(r.kind))
                r.patched_by.append(label)
    return resources


def _read_patch(entry: dict, directory: Path, root: Path, where: str) -> tuple[str, list]:
    unsupported = sorted(set(entry) - {"path", "patch", "target"})
    if unsupported:
        raise RenderError(f"{where}: patch field(s) {', '.join(unsupported)} not supported")
    if "path" in entry:
        path = directory / entry["path"]
        if not path.is_file():
            raise RenderError(f"{where}: patches: {entry['path']} does not exist")
        return _rel(path, root), parse_yaml(path.read_text(encoding="utf-8"))
    if "patch" in entry:
        return f"{where} (inline patch)", parse_yaml(entry["patch"])
    raise RenderError(f"{where}: a patch needs `path` or `patch`")


def _without_identity(patch: dict) -> dict:
    """A strategic-merge patch minus apiVersion, kind and name, which select the
    object (or, with a target, are ignored) and are never patched."""
    patch = copy.deepcopy(patch)
    patch.pop("apiVersion", None)
    patch.pop("kind", None)
    metadata = patch.get("metadata") or {}
    metadata.pop("name", None)
    if not metadata:
        patch.pop("metadata", None)
    return patch


def _select(resources: list[Resource], target: dict, label: str) -> list[Resource]:
    unsupported = sorted(set(target) - {"kind", "name", "group", "version", "labelSelector"})
    if unsupported:
        raise RenderError(f"{label}: target field(s) {', '.join(unsupported)} not supported")
    wanted_labels = {}
    if target.get("labelSelector"):
        for term in str(target["labelSelector"]).split(","):
            if "=" not in term or "!" in term:
                raise RenderError(f"{label}: only k=v label selectors are supported, not {term!r}")
            k, v = term.split("=", 1)
            wanted_labels[k.strip()] = v.strip()
    out = []
    for r in resources:
        group, _, version = r.obj.get("apiVersion", "").rpartition("/")
        if target.get("kind") and r.kind != target["kind"]:
            continue
        if target.get("name") and not re.fullmatch(str(target["name"]), r.name):
            continue
        if "group" in target and group != (target["group"] or ""):
            continue
        if target.get("version") and version != target["version"]:
            continue
        labels = (r.obj.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in wanted_labels.items()):
            continue
        out.append(r)
    if not out:
        raise RenderError(f"{label}: no object matches {target}")
    return out


def _merge_keys(kind: str) -> dict[str, str]:
    if kind in WORKLOAD_KINDS:
        return WORKLOAD_MERGE_KEYS
    if kind == "Service":
        return SERVICE_MERGE_KEYS
    return {}  # other kinds (and custom resources): lists are replaced whole


def _strategic_merge(base: dict, patch: dict, path: str, merge_keys: dict[str, str]) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise RenderError(f"strategic-merge directive {key} at {path or '/'} not supported")
        here = f"{path}.{key}" if path else key
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            if value.get("$patch") == "replace":
                base[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != "$patch"}
            else:
                _strategic_merge(base[key], value, here, merge_keys)
        elif isinstance(value, list) and isinstance(base.get(key), list) and here_key(here) in merge_keys:
            base[key] = _merge_list(base[key], value, here, merge_keys)
        else:
            base[key] = copy.deepcopy(value)


def here_key(path: str) -> str:
    """`spec.template.spec.containers.0.env` -> `spec.template.spec.containers[].env`."""
    return re.sub(r"\.\d+(?=\.|$)", "[]", path)


def _merge_list(base: list, patch: list, path: str, merge_keys: dict[str, str]) -> list:
    key = merge_keys[here_key(path)]
    out = copy.deepcopy(base)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise RenderError(f"strategic merge at {path}: every item needs its merge key {key!r}")
        index = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
        elif index is None:
            out.append(copy.deepcopy(item))
        else:
            _strategic_merge(out[index], item, f"{path}.{index}", merge_keys)
    return out


def _json6902(obj: dict, op: dict, label: str) -> None:
    kind, pointer = op.get("op"), op.get("path", "")
    if kind not in ("add", "remove", "replace", "test"):
        raise RenderError(f"{label}: JSON patch op {kind!r} not supported")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    if not parts:
        raise RenderError(f"{label}: JSON patch path {pointer!r} must not be the root")
    parent = obj
    for p in parts[:-1]:
        try:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError) as e:
            raise RenderError(f"{label}: {kind} {pointer}: {p} does not exist") from e
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op.get("value")))
            return
        if index >= len(parent):
            raise RenderError(f"{label}: {kind} {pointer}: index out of range")
        if kind == "remove":
            parent.pop(index)
        elif kind == "replace":
            parent[index] = copy.deepcopy(op.get("value"))
        elif parent[index] != op.get("value"):
            raise RenderError(f"{label}: test {pointer} failed")
        return
    if kind in ("remove", "replace", "test") and last not in parent:
        raise RenderError(f"{label}: {kind} {pointer}: {last} does not exist")
    if kind == "remove":
        del parent[last]
    elif kind == "test":
        if parent[last] != op.get("value"):
            raise RenderError(f"{label}: test {pointer} failed")
    else:
        parent[last] = copy.deepcopy(op.get("value"))


# --- labels, replicas, images -------------------------------------------------------


def _apply_labels(resources: list[Resource], entry: dict, where: str) -> None:
    unsupported = sorted(set(entry) - {"pairs", "includeSelectors", "includeTemplates"})
    if unsupported:
        raise RenderError(f"{where}: labels field(s) {', '.join(unsupported)} not supported")
    if entry.get("includeSelectors"):
        raise RenderError(f"{where}: labels.includeSelectors: true not supported (selectors are immutable)")
    pairs = entry.get("pairs") or {}
    for r in resources:
        r.obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates") and r.kind in WORKLOAD_KINDS:
            template = r.obj.setdefault("spec", {}).setdefault("template", {})
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _apply_replicas(resources: list[Resource], entry: dict, where: str) -> None:
    matched = [r for r in resources if r.kind in SCALABLE_KINDS and r.name == entry.get("name")]
    if not matched:
        raise RenderError(f"{where}: replicas: no Deployment or StatefulSet named {entry.get('name')}")
    for r in matched:
        r.obj.setdefault("spec", {})["replicas"] = entry["count"]


def split_image(image: str) -> tuple[str, str, str]:
    """`repo/name:tag@sha256:...` -> (`repo/name`, `:tag`, `@sha256:...`)."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:], at + digest
    return name, "", at + digest


def _apply_image(resources: list[Resource], entry: dict) -> None:
    def visit(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for c in value:
                        if isinstance(c, dict) and isinstance(c.get("image"), str):
                            c["image"] = _new_image(c["image"], entry)
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    for r in resources:
        visit(r.obj)


def _new_image(image: str, entry: dict) -> str:
    name, tag, digest = split_image(image)
    if name != entry.get("name"):
        return image
    name = entry.get("newName", name)
    if "digest" in entry:
        return f"{name}@{entry['digest']}"
    if "newTag" in entry:
        return f"{name}:{entry['newTag']}"
    return f"{name}{tag}{digest}"
