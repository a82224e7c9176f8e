"""Why pods do not serve: the most urgent problem among a revision's pods, read from
their status (scheduling, the storage initializer, crash loops, image pulls).

Used by rollout (failure detection) and status (the Ready reason); it knows neither.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .manifests import MODEL_VOLUME, STORAGE_CONTAINER

# Reasons, most urgent first: the first that applies explains why Ready is False.
INSUFFICIENT_GPU = "InsufficientGPU"
UNSCHEDULABLE = "Unschedulable"
STORAGE_FAILED = "StorageInitializerFailed"
CRASH_LOOP = "CrashLoopBackOff"
IMAGE_PULL = "ImagePullBackOff"


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


# The scheduler's words for GPUs it cannot find: an extended resource of a vendor domain
# (nvidia.com/gpu, nvidia.com/mig-1g.10gb, nvidia.com/gpu.shared), or a device claim
# (DRA) it cannot allocate.
_SHORT_OF_EXTENDED = re.compile(r"Insufficient [a-z0-9]([-a-z0-9.]*[a-z0-9])?\.[a-z]+/")
_CLAIMS_UNALLOCATABLE = "cannot allocate all claims"


def _short_of_gpus(message: str) -> bool:
    return bool(_SHORT_OF_EXTENDED.search(message)) or _CLAIMS_UNALLOCATABLE in message


def find_condition(conditions: Any, type_: str) -> Mapping[str, Any] | None:
    for c in conditions or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            return c
    return None


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> Problem | None:
    """The most urgent reason, among the pods, that keeps replicas from serving."""
    found: dict[str, str] = {}
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        scheduled = find_condition(status.get("conditions"), "PodScheduled")
        if scheduled and scheduled.get("status") == "False":
            message = str(scheduled.get("message") or "")
            if scheduled.get("reason") == "Unschedulable":
                if _short_of_gpus(message):
                    found.setdefault(INSUFFICIENT_GPU, f"pods cannot be scheduled: {message}")
                else:
                    found.setdefault(UNSCHEDULABLE, f"pods cannot be scheduled: {message}")
        for init in status.get("initContainerStatuses") or ():
            if init.get("name") != STORAGE_CONTAINER:
                continue
            state = init.get("state") or {}
            waiting = state.get("waiting") or {}
            current = state.get("terminated") or {}
            if "running" in state or current.get("exitCode") == 0:
                continue  # downloading again, or done: an earlier failed try is history
            last = (init.get("lastState") or {}).get("terminated") or {}
            failed = current if current else last
            if failed.get("exitCode") not in (None, 0) or waiting.get("reason") == CRASH_LOOP:
                detail = failed.get("message") or waiting.get("message") or "exited non-zero"
                found.setdefault(STORAGE_FAILED, f"model download failed: {detail.strip()}")
        for cs in status.get("containerStatuses") or ():
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason == CRASH_LOOP:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                detail = last.get("message") or last.get("reason") or "container keeps exiting"
                found.setdefault(
                    CRASH_LOOP, f"container {cs.get('name')} is crash-looping: {detail.strip()}"
                )
            elif reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
                found.setdefault(
                    IMAGE_PULL,
                    f"image of {cs.get('name')} cannot be pulled: {waiting.get('message', reason)}",
                )
    for reason in (INSUFFICIENT_GPU, UNSCHEDULABLE, STORAGE_FAILED, IMAGE_PULL, CRASH_LOOP):
        if reason in found:
            return Problem(reason, found[reason])
    return None


# What the storage initializer says it fetched (its termination message on success).
FETCHED_PREFIXES = ("pulled ", "content ")


def fetched_digest(pod: Mapping[str, Any]) -> str:
    """The digest of the model a pod holds ("" before it is known): what its storage
    initializer fetched (the image's manifest digest for oci://, the content digest of the
    folder otherwise), or the digest the kubelet mounted as the model's image volume."""
    return _initializer_digest(pod) or _mounted_digest(pod)


def _mounted_digest(pod: Mapping[str, Any]) -> str:
    """The digest of the model's image volume, once a container runs with it mounted."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    for container in statuses:
        for mount in container.get("volumeMounts") or ():
            # The kubelet's word, where the runtime reports it (feature gate
            # ImageVolumeWithDigest, alpha in 1.37; containerd 2.4 does not yet). Only a
            # repository digest (name@sha256:…) is the manifest digest pinning resolved.
            image = (mount.get("volumeStatus") or {}).get("image") or {}
            ref = str(image.get("imageRef") or "")
            if mount.get("name") == MODEL_VOLUME and "@sha256:" in ref:
                return ref.rsplit("@", 1)[1]
    # Else the reference itself: mounted by digest, the runtime checked the bytes against it.
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        ref = str((volume.get("image") or {}).get("reference") or "")
        started = any(c.get("started") or "running" in (c.get("state") or {}) for c in statuses)
        if volume.get("name") == MODEL_VOLUME and "@sha256:" in ref and started:
            return ref.rsplit("@", 1)[1]
    return ""


def _initializer_digest(pod: Mapping[str, Any]) -> str:
    for init in (pod.get("status") or {}).get("initContainerStatuses") or ():
        if init.get("name") != STORAGE_CONTAINER:
            continue
        done = (init.get("state") or {}).get("terminated") or {}
        message = str(done.get("message") or "").strip()
        if done.get("exitCode") == 0 and message.startswith(FETCHED_PREFIXES):
            return message.split(" ", 1)[1]
    return ""
