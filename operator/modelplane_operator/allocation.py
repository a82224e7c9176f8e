"""What GPUs a ModelDeployment's pods actually hold, for status.

Extended resources: the GPUs (MIG slices, shared replicas) of the pods the scheduler
has bound to a node. Device claims: the devices in the allocation results of the pods'
ResourceClaims, with the product the ResourceSlices give for each.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .devices import DeviceKey, slice_devices
from .gpu import pod_gpus
from .manifests import GPU_CLAIM
from .revisions import TERMINAL_PHASES
from .spec import NVIDIA_DRIVER, ModelDeploymentSpec


class GpuMode(enum.StrEnum):
    EXTENDED_RESOURCE = "ExtendedResource"
    DEVICE_CLAIM = "DeviceClaim"


@dataclass(frozen=True)
class GpuAllocation:
    mode: GpuMode
    source: str  # the extended resource, or the DeviceClass
    allocated: int
    products: tuple[str, ...] = ()

    def to_status(self) -> dict[str, Any]:
        key = "resource" if self.mode is GpuMode.EXTENDED_RESOURCE else "deviceClassName"
        out: dict[str, Any] = {"mode": self.mode.value, key: self.source}
        out["allocated"] = self.allocated
        if self.products:
            out["products"] = list(self.products)
        return out


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES and not (
        pod.get("metadata") or {}
    ).get("deletionTimestamp")


def extended_allocation(
    md: ModelDeploymentSpec, pods: Iterable[Mapping[str, Any]]
) -> GpuAllocation:
    """GPUs of the extended resource held by pods bound to a node."""
    held = sum(
        pod_gpus(p, md.gpu.resource)
        for p in pods
        if _live(p) and (p.get("spec") or {}).get("nodeName")
    )
    products = (md.gpu.product,) if md.gpu.product and held else ()
    return GpuAllocation(GpuMode.EXTENDED_RESOURCE, md.gpu.resource, held, products)


def pod_claim_names(pods: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the GPU claims the resourceclaim controller made for these pods."""
    names = set()
    for pod in pods:
        if not _live(pod):
            continue
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or ():
            if s.get("name") == GPU_CLAIM and s.get("resourceClaimName"):
                names.add(str(s["resourceClaimName"]))
    return names


def claim_allocation(
    device_class: str,
    pods: Iterable[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
) -> GpuAllocation:
    """Devices allocated to the pods' claims, and their products."""
    ours = pod_claim_names(pods)
    keys: list[DeviceKey] = []
    for claim in claims:
        if (claim.get("metadata") or {}).get("name") not in ours:
            continue
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for r in (allocation.get("devices") or {}).get("results") or ():
            keys.append((str(r.get("driver")), str(r.get("pool")), str(r.get("device"))))
    by_key = {d.key: d for d in slice_devices(slices)}
    products = sorted({p for k in keys if (p := _product(by_key.get(k)))})
    return GpuAllocation(GpuMode.DEVICE_CLAIM, device_class, len(keys), tuple(products))


def _product(device: Any) -> str | None:
    if device is None:
        return None
    attributes = device.raw.get("attributes") or {}
    value = attributes.get("productName") or attributes.get(f"{NVIDIA_DRIVER}/productName") or {}
    return str(value["string"]) if "string" in value else None
