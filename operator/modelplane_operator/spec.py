"""A typed, defaulted view of a ModelDeployment.

The CRD schema defaults and validates at admission; ``parse`` applies the same
defaults again so the operator never depends on them (an object created before a
schema change, or on a cluster without defaulting, still reconciles), and raises
``SpecError`` with a readable message for anything it cannot serve.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "modelplane.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"
API_VERSION = f"{GROUP}/{VERSION}"

URI_SCHEMES = ("file", "pvc", "http", "https", "s3", "gs")
PRECISIONS = ("float32", "float16", "bfloat16", "int8")
_LABEL_VALUE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")


def resolve_count(value: int | str, replicas: int, round_up: bool) -> int:
    """An int-or-percentage (maxSurge, maxUnavailable) as a pod count, like a Deployment."""
    if isinstance(value, int):
        return max(0, value)
    text = str(value).strip()
    if not text.endswith("%"):
        return int(text) if text.isdigit() else 0
    exact = replicas * int(text.rstrip("%") or 0) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


class SpecError(ValueError):
    """The spec cannot be served as written; the message is shown to the user."""


@dataclass(frozen=True)
class Gpu:
    count: int = 0
    product: str | None = None


@dataclass(frozen=True)
class Batching:
    enabled: bool = True
    max_batch_size: int = 32
    max_queue_delay_ms: int = 5


@dataclass(frozen=True)
class Pause:
    """A canary step's hold: ``seconds`` long, or (None) until a manual promotion."""

    seconds: float | None = None


@dataclass(frozen=True)
class CanaryStep:
    """One canary step: the new revision's share of the replicas, then an optional hold
    (without one, the next step follows as soon as this one's replicas are ready)."""

    weight: int
    pause: Pause | None = None


def parse_duration(text: str) -> float:
    """'30s', '5m', '1h' (the CRD's pattern) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"not a duration like 30s, 5m or 1h: {text!r}")
    return float(int(text[:-1]) * units[text[-1]])


def _canary_step(raw: Mapping[str, Any]) -> CanaryStep:
    pause = raw.get("pause")
    if not isinstance(pause, Mapping):
        return CanaryStep(int(raw.get("weight", 100)))
    duration = pause.get("duration")
    return CanaryStep(
        int(raw.get("weight", 100)), Pause(parse_duration(str(duration)) if duration else None)
    )


@dataclass(frozen=True)
class Rollout:
    strategy: str = "RollingUpdate"
    max_surge: int | str = 1
    max_unavailable: int | str = 0
    progress_deadline_seconds: int = 600
    auto_rollback: bool = True
    paused: bool = False
    rollback_to: int | None = None
    canary_steps: tuple[CanaryStep, ...] = ()


@dataclass(frozen=True)
class PodOverrides:
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    service_account_name: str | None = None
    priority_class_name: str | None = None
    image_pull_secrets: tuple[Mapping[str, Any], ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelDeploymentSpec:
    """Everything the planner and builders need from one ModelDeployment."""

    name: str
    namespace: str
    uid: str
    generation: int
    model_name: str
    version: str
    uri: str
    format: str
    sha256: str | None
    secret_name: str | None
    image: str | None
    storage_image: str | None
    port: int
    resources: Mapping[str, Mapping[str, Any]]
    gpu: Gpu
    env: tuple[Mapping[str, Any], ...]
    batching: Batching
    precision: str | None  # MODELPLANE_PRECISION; None: the runtime's default (float32)
    replicas: int
    rollout: Rollout
    revision_history_limit: int
    pod: PodOverrides

    @property
    def gpus_requested(self) -> int:
        return self.replicas * self.gpu.count


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"spec.{key} must be an object")
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, minimum: int = 0) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}.{key} must be an integer of at least {minimum}")
    return value


def parse(body: Mapping[str, Any]) -> ModelDeploymentSpec:
    """Parse a ModelDeployment object (as read from the API) into a typed spec."""
    meta = body.get("metadata") or {}
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec is missing")
    model = _section(spec, "model")
    runtime = _section(spec, "runtime")
    rollout = _section(spec, "rollout")
    pod = _section(spec, "pod")
    version, uri, fmt = _model_source(model)
    gpu = _gpu(runtime)
    resources = runtime.get("resources") or {}
    precision = _precision(runtime, gpu)
    secret_ref = model.get("secretRef") or {}
    return ModelDeploymentSpec(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        model_name=str(model.get("name") or meta.get("name", "")),
        version=version,
        uri=uri,
        format=fmt,
        sha256=model.get("sha256") or None,
        secret_name=secret_ref.get("name") or None,
        image=runtime.get("image") or None,
        storage_image=runtime.get("storageInitializerImage") or None,
        port=_int(runtime, "port", 8080, "spec.runtime", minimum=1),
        resources={k: dict(v) for k, v in resources.items() if isinstance(v, Mapping)},
        gpu=gpu,
        env=tuple(runtime.get("env") or ()),
        batching=_batching(runtime.get("batching") or {}),
        precision=precision,
        replicas=_int(spec, "replicas", 1, "spec"),
        rollout=_rollout(rollout),
        revision_history_limit=_int(spec, "revisionHistoryLimit", 5, "spec"),
        pod=_pod(pod),
    )


def _model_source(model: Mapping[str, Any]) -> tuple[str, str, str]:
    """spec.model's version, uri and format, each checked."""
    version = str(model.get("version", ""))
    if not _LABEL_VALUE.match(version) or len(version) > 63:
        raise SpecError(
            "spec.model.version must be 1-63 letters, digits, '.', '-' or '_' "
            "starting and ending with a letter or digit"
        )
    uri = str(model.get("uri", ""))
    if uri.split("://", 1)[0] not in URI_SCHEMES or "://" not in uri:
        raise SpecError(f"spec.model.uri must use one of the schemes {', '.join(URI_SCHEMES)}")
    fmt = str(model.get("format", "torch-export"))
    if fmt != "torch-export":
        raise SpecError(f"spec.model.format {fmt!r} is not supported (use torch-export)")
    return version, uri, fmt


def _gpu(runtime: Mapping[str, Any]) -> Gpu:
    gpu = Gpu()
    gpu_raw = runtime.get("gpu")
    if isinstance(gpu_raw, Mapping):
        gpu = Gpu(
            count=_int(gpu_raw, "count", 1, "spec.runtime.gpu"),
            product=gpu_raw.get("product") or None,
        )
    resources = runtime.get("resources") or {}
    for part in ("requests", "limits"):
        if "nvidia.com/gpu" in (resources.get(part) or {}):
            raise SpecError(f"set GPUs with spec.runtime.gpu.count, not resources.{part}")
    return gpu


def _precision(runtime: Mapping[str, Any], gpu: Gpu) -> str | None:
    precision = runtime.get("precision") or None
    if precision is not None and precision not in PRECISIONS:
        raise SpecError(f"spec.runtime.precision must be one of {', '.join(PRECISIONS)}")
    if precision in ("float16", "bfloat16") and not gpu.count:
        raise SpecError(f"spec.runtime.precision {precision} runs on a GPU (runtime.gpu.count)")
    if precision == "int8" and gpu.count:
        raise SpecError("spec.runtime.precision int8 runs on CPUs: set runtime.gpu.count to 0")
    return str(precision) if precision is not None else None


def _batching(batching: Mapping[str, Any]) -> Batching:
    return Batching(
        enabled=bool(batching.get("enabled", True)),
        max_batch_size=_int(batching, "maxBatchSize", 32, "spec.runtime.batching", 1),
        max_queue_delay_ms=_int(batching, "maxQueueDelayMs", 5, "spec.runtime.batching"),
    )


def _rollout(rollout: Mapping[str, Any]) -> Rollout:
    canary = rollout.get("canary") or {}
    return Rollout(
        strategy=str(rollout.get("strategy", "RollingUpdate")),
        max_surge=rollout.get("maxSurge", 1),
        max_unavailable=rollout.get("maxUnavailable", 0),
        progress_deadline_seconds=_int(rollout, "progressDeadlineSeconds", 600, "spec.rollout", 1),
        auto_rollback=bool(rollout.get("autoRollback", True)),
        paused=bool(rollout.get("paused", False)),
        rollback_to=rollout.get("rollbackTo"),
        canary_steps=tuple(_canary_step(s) for s in canary.get("steps") or ()),
    )


def _pod(pod: Mapping[str, Any]) -> PodOverrides:
    return PodOverrides(
        node_selector=dict(pod.get("nodeSelector") or {}),
        tolerations=tuple(pod.get("tolerations") or ()),
        affinity=pod.get("affinity") or None,
        service_account_name=pod.get("serviceAccountName") or None,
        priority_class_name=pod.get("priorityClassName") or None,
        image_pull_secrets=tuple(pod.get("imagePullSecrets") or ()),
        annotations=dict(pod.get("annotations") or {}),
        labels=dict(pod.get("labels") or {}),
    )
