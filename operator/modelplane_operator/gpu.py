"""Free GPU capacity: how many more pods of a given shape fit on the GPU nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .compare import quantity
from .manifests import GPU_PRODUCT_LABEL
from .revisions import TERMINAL_PHASES
from .spec import GPU_RESOURCE


def _count(value: Any) -> int:
    parsed = quantity(value)
    return int(parsed) if parsed is not None else 0


def pod_gpus(pod: Mapping[str, Any], resource: str = GPU_RESOURCE) -> int:
    """How much of an extended resource (GPUs, MIG slices, shared GPU replicas) a pod
    holds: its containers' limits (or requests)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or ():
        resources = container.get("resources") or {}
        amount = (resources.get("limits") or {}).get(resource) or (
            resources.get("requests") or {}
        ).get(resource)
        total += _count(amount) if amount is not None else 0
    return total


def node_ready(node: Mapping[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def free_slots(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    gpus_per_pod: int,
    product: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    resource: str = GPU_RESOURCE,
) -> int:
    """How many more pods needing ``gpus_per_pod`` of ``resource`` fit on matching nodes.

    Pods not yet bound to a node but already asking for GPUs hold the slots their GPUs
    fill: they will take them as soon as the scheduler places them.
    """
    if gpus_per_pod <= 0:
        return 1 << 30
    selector = dict(node_selector or {})
    if product:
        selector[GPU_PRODUCT_LABEL] = product
    used: dict[str, int] = {}
    pending = 0
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            continue
        gpus = pod_gpus(pod, resource)
        if not gpus:
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            used[node] = used.get(node, 0) + gpus
        elif not (pod.get("metadata") or {}).get("deletionTimestamp"):
            # In slots of this shape, rounded up: a pending pod's GPUs may break one.
            pending += -(-gpus // gpus_per_pod)
    slots = 0
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()) or not node_ready(node):
            continue
        capacity = _count(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0))
        name = (node.get("metadata") or {}).get("name", "")
        slots += max(0, capacity - used.get(name, 0)) // gpus_per_pod
    return max(0, slots - pending)
