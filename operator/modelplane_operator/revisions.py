"""Revisions: one Deployment per distinct pod template, numbered 1, 2, 3, ...

A revision's identity is the hash of the pod template the builders produce for a
spec (version, uri, image, resources, GPUs, env, pod settings; not replicas). Its
Deployment is ``<name>-r<N>``, labelled ``modelplane.io/revision=N`` and annotated
with the template hash, so the operator can recognise it again after a restart
and reuse it when the spec goes back to an earlier version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REVISION_LABEL = "modelplane.io/revision"
TEMPLATE_HASH = "modelplane.io/template-hash"
# The digests a revision serves (pinning.py), as JSON: {"model": ..., "image": ...}.
PINS_ANNOTATION = "modelplane.io/pins"
# A revision made because a refreshed tag moved: the hash of the spec it serves (its own
# hash then covers the spec and the new digests). Absent: the revision's hash is the spec's.
SPEC_HASH = "modelplane.io/spec-hash"
# Pods in these phases hold no resources; they stay only until pod GC.
TERMINAL_PHASES = ("Succeeded", "Failed")


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


def deployment_name(md_name: str, revision: int) -> str:
    return f"{md_name}-r{revision}"


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


@dataclass(frozen=True)
class Revision:
    """One revision as the cluster shows it."""

    number: int
    hash: str
    version: str
    uri: str
    image: str
    replicas: int  # the Deployment's spec.replicas
    pods: int  # pods that exist and have not finished, terminating ones included
    ready: int  # pods that are Ready and not terminating
    pod_objects: tuple[Mapping[str, Any], ...] = ()
    pins: str = ""  # its PINS_ANNOTATION: the digests it was made with ("" for none)
    made_for: str = ""  # its SPEC_HASH annotation, when its hash is not the spec's

    @property
    def spec_hash(self) -> str:
        """The hash of the spec this revision serves."""
        return self.made_for or self.hash

    @property
    def unavailable(self) -> int:
        return max(0, self.replicas - self.ready)

    @property
    def ready_pods(self) -> tuple[Mapping[str, Any], ...]:
        """The pods the Service sends traffic to."""
        return tuple(p for p in self.pod_objects if _ready(p))


def observe_revisions(
    deployments: Iterable[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> dict[int, Revision]:
    """Group a ModelDeployment's Deployments and pods into revisions."""
    by_revision: dict[int, list[Mapping[str, Any]]] = {}
    for pod in pods:
        # A Failed (evicted) or Succeeded pod stays until pod GC, holding no resources: it
        # must not keep its revision present, or an old revision never drains.
        if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue
        label = ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL, "")
        if label.isdigit():
            by_revision.setdefault(int(label), []).append(pod)
    revisions: dict[int, Revision] = {}
    for dep in deployments:
        meta = dep.get("metadata") or {}
        label = (meta.get("labels") or {}).get(REVISION_LABEL, "")
        if not label.isdigit():
            continue
        number = int(label)
        template = (dep.get("spec") or {}).get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or [{}]
        env = {e.get("name"): e.get("value") for e in containers[0].get("env") or ()}
        its_pods = by_revision.get(number, [])
        live = [p for p in its_pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        revisions[number] = Revision(
            number=number,
            hash=str((meta.get("annotations") or {}).get(TEMPLATE_HASH, "")),
            version=str(env.get("MODELPLANE_MODEL_VERSION") or ""),
            uri=_model_uri(template, str((meta.get("annotations") or {}).get(PINS_ANNOTATION, ""))),
            image=str(containers[0].get("image") or ""),
            replicas=int((dep.get("spec") or {}).get("replicas") or 0),
            pins=str((meta.get("annotations") or {}).get(PINS_ANNOTATION, "")),
            made_for=str((meta.get("annotations") or {}).get(SPEC_HASH, "")),
            pods=len(its_pods),
            ready=sum(1 for p in live if _ready(p)),
            pod_objects=tuple(live),
        )
    return revisions


def _model_uri(template: Mapping[str, Any], pins: str) -> str:
    """The model URI a revision serves: its storage initializer's, or, when the kubelet
    mounts the model as an image volume (no initializer), the one pinned for it."""
    found = _storage_uri(template)
    if found or not pins:
        return found
    try:
        return str(json.loads(pins).get("model") or "")
    except (ValueError, AttributeError):
        return ""


def _storage_uri(template: Mapping[str, Any]) -> str:
    for init in (template.get("spec") or {}).get("initContainers") or ():
        for env in init.get("env") or ():
            if env.get("name") == "MODELPLANE_STORAGE_URI":
                return str(env.get("value") or "")
    return ""
