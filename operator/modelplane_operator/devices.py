"""Free DRA devices: how many more pods with a given device claim fit now.

The scheduler allocates claims from ResourceSlices; this counts, on each ready node
that the pods may use, the devices that match the claim's DeviceClass and selectors
and that no ResourceClaim holds, and divides by the devices one pod asks for. Claims
not yet allocated (pods waiting for the scheduler) hold what they will take.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cel import device_activation, matches
from .gpu import node_ready
from .manifests import device_selectors
from .spec import GpuClaim

# A device as allocation results name it.
DeviceKey = tuple[str, str, str]  # driver, pool, device


@dataclass(frozen=True)
class Device:
    """One device of a ResourceSlice, with where it is."""

    key: DeviceKey
    node: str | None  # None: a pool not bound to one node (network-attached)
    raw: Mapping[str, Any]

    @property
    def driver(self) -> str:
        return self.key[0]


def slice_devices(slices: Iterable[Mapping[str, Any]]) -> list[Device]:
    """Every device the ResourceSlices publish."""
    out = []
    for s in slices:
        spec = s.get("spec") or {}
        driver, pool = str(spec.get("driver", "")), str((spec.get("pool") or {}).get("name", ""))
        node = spec.get("nodeName") or None
        for d in spec.get("devices") or ():
            out.append(Device((driver, pool, str(d.get("name", ""))), node, d))
    return out


def allocated(claims: Iterable[Mapping[str, Any]]) -> set[DeviceKey]:
    """Devices that claims hold (their allocation results)."""
    held: set[DeviceKey] = set()
    for claim in claims:
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for r in (allocation.get("devices") or {}).get("results") or ():
            held.add((str(r.get("driver")), str(r.get("pool")), str(r.get("device"))))
    return held


def _requests(claim: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        r.get("exactly") or {}
        for r in ((claim.get("spec") or {}).get("devices") or {}).get("requests") or ()
    ]


def waiting_slots(claims: Iterable[Mapping[str, Any]], want: GpuClaim) -> int:
    """Slots of this shape that unallocated claims of the same class will take."""
    slots = 0
    for claim in claims:
        meta, status = claim.get("metadata") or {}, claim.get("status") or {}
        if status.get("allocation") or meta.get("deletionTimestamp"):
            continue
        for request in _requests(claim):
            if request.get("deviceClassName") == want.device_class:
                slots += math.ceil(int(request.get("count") or 1) / want.count)
    return slots


def class_selectors(classes: Iterable[Mapping[str, Any]], name: str) -> list[str] | None:
    """The DeviceClass's CEL selectors; None when the class does not exist."""
    for c in classes:
        if (c.get("metadata") or {}).get("name") == name:
            selectors = (c.get("spec") or {}).get("selectors") or ()
            return [str((s.get("cel") or {}).get("expression")) for s in selectors]
    return None


def matching(devices: Iterable[Device], selectors: Sequence[str]) -> list[Device]:
    """The devices every selector accepts."""
    out = []
    for d in devices:
        activation = device_activation(d.driver, d.raw)
        if all(matches(e, activation) for e in selectors):
            out.append(d)
    return out


def free_claim_slots(
    nodes: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    classes: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    want: GpuClaim,
    node_selector: Mapping[str, str] | None = None,
) -> int:
    """How many more pods, each with one claim like ``want``, the free devices can serve."""
    selectors = class_selectors(classes, want.device_class)
    if selectors is None:
        return 0  # the scheduler cannot allocate from a class that does not exist
    usable = {
        str((n.get("metadata") or {}).get("name"))
        for n in nodes
        if node_ready(n) and _labels_match(n, node_selector or {})
    }
    held = allocated(claims)
    free: dict[str | None, int] = {}
    candidates = [d for d in slice_devices(slices) if d.key not in held]
    for d in matching(candidates, [*selectors, *device_selectors(want)]):
        if d.node is None or d.node in usable:
            free[d.node] = free.get(d.node, 0) + 1
    # One claim's devices come from one node (or one node-less pool).
    slots = sum(count // want.count for count in free.values())
    return max(0, slots - waiting_slots(claims, want))


def _labels_match(node: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def mapped_class(classes: Iterable[Mapping[str, Any]], resource: str) -> str | None:
    """The DeviceClass that serves an extended resource through DRA (its
    extendedResourceName); of several, the newest, as the scheduler picks it."""
    named = [c for c in classes if (c.get("spec") or {}).get("extendedResourceName") == resource]
    if not named:
        return None
    newest = max(named, key=lambda c: str((c.get("metadata") or {}).get("creationTimestamp", "")))
    return str(newest["metadata"]["name"])


def mapped_slots(
    nodes: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    classes: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    resource: str,
    per_pod: int,
    node_selector: Mapping[str, str] | None = None,
) -> int:
    """Pods asking for ``per_pod`` of an extended resource that DRA devices can serve:
    the scheduler maps the request to a DeviceClass on nodes that do not advertise the
    resource themselves (a device plugin's nodes keep the resource path)."""
    name = mapped_class(classes, resource)
    if name is None or per_pod <= 0:
        return 0
    dra_nodes = [
        n for n in nodes if resource not in ((n.get("status") or {}).get("allocatable") or {})
    ]
    want = GpuClaim(count=per_pod, device_class=name)
    return free_claim_slots(dra_nodes, slices, classes, claims, want, node_selector)
