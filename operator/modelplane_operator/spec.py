"""A typed, defaulted view of a ModelDeployment.

The CRD schema defaults and validates at admission; ``parse`` applies the same
defaults again so the operator never depends on them (an object created before a
schema change, or on a cluster without defaulting, still reconciles), and raises
``SpecError`` with a readable message for anything it cannot serve.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import modelplane_oci as oci

GROUP = "modelplane.io"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"
API_VERSION = f"{GROUP}/{VERSION}"

URI_SCHEMES = ("file", "pvc", "http", "https", "s3", "gs", "oci")
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


# The extended resource of NVIDIA's device plugin; MIG (mixed strategy) and shared
# (time-sliced, renamed) GPUs are other extended resources of the same plugin.
GPU_RESOURCE = "nvidia.com/gpu"
# NVIDIA's DRA driver and its DeviceClasses (as its Helm chart ships them).
NVIDIA_DRIVER = "gpu.nvidia.com"
GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
_EXTENDED_RESOURCE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.+]*[a-zA-Z0-9])?$"
)
_MIG_PROFILE = re.compile(r"^[0-9]+g\.[0-9]+gb(\+[a-z]+)?$")
# No quotes or backslashes: the product goes into a CEL string literal.
_PRODUCT_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9 _.()]{0,62}$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


class ServerKind(enum.StrEnum):
    """Which HTTP model server runs in the serving container (spec.runtime.server.kind)."""

    MODELPLANE = "modelplane"  # modelplane's own Torch runtime (torch.export, OIP v2)
    TORCHSERVE = "torchserve"
    TRITON = "triton"
    VLLM = "vllm"
    CUSTOM = "custom"  # any server the spec describes


# What each server's /metrics lets the operator judge (servers.metrics_endpoint reads it):
# requests by outcome (a canary's success rate), a latency histogram (its p99 rules) and
# in-flight work (autoscaling). What a custom server exports is not known.
COUNTS_OUTCOMES = frozenset(
    {ServerKind.MODELPLANE, ServerKind.TORCHSERVE, ServerKind.TRITON, ServerKind.VLLM}
)
HAS_LATENCY_HISTOGRAM = frozenset({ServerKind.MODELPLANE, ServerKind.VLLM})
HAS_IN_FLIGHT = frozenset({ServerKind.MODELPLANE, ServerKind.TRITON, ServerKind.VLLM})


@dataclass(frozen=True)
class Server:
    """spec.runtime.server: the kind, and what the spec overrides of its defaults."""

    kind: ServerKind = ServerKind.MODELPLANE
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    readiness_path: str | None = None
    liveness_path: str | None = None
    metrics_path: str | None = None
    metrics_port: int | None = None


class ModelDelivery(enum.StrEnum):
    """How an oci:// model reaches the pod (spec.model.delivery)."""

    FETCH = "Fetch"  # the storage initializer pulls it into an emptyDir: any node, any scheme
    IMAGE_VOLUME = "ImageVolume"  # the kubelet mounts it: no copy, needs containerd 2.1+


class SharingStrategy(enum.StrEnum):
    """How NVIDIA's DRA driver shares one allocated GPU (its GpuConfig sharing strategy)."""

    TIME_SLICING = "TimeSlicing"
    MPS = "MPS"


@dataclass(frozen=True)
class Gpu:
    """GPUs as extended resources (device plugin): ``count`` of ``resource`` per replica."""

    count: int = 0
    product: str | None = None
    resource: str = GPU_RESOURCE


@dataclass(frozen=True)
class Sharing:
    strategy: SharingStrategy
    config: Mapping[str, Any] = field(default_factory=dict)  # the driver's own settings


@dataclass(frozen=True)
class GpuClaim:
    """GPUs through Dynamic Resource Allocation: one ResourceClaim per pod, made from
    its revision's ResourceClaimTemplate and allocated by the scheduler."""

    count: int = 1
    device_class: str = GPU_CLASS
    product: str | None = None  # the driver's productName attribute
    min_memory: str | None = None  # the device's memory capacity, at least
    mig_profile: str | None = None  # e.g. 1g.10gb: MIG devices of mig.nvidia.com
    selectors: tuple[str, ...] = ()  # CEL over device attributes and capacity
    sharing: Sharing | None = None


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
    """'250ms', '30s', '5m', '1h' (the CRD's patterns) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number, unit = text.rstrip("smh"), text.lstrip("0123456789")
    if not number.isdigit() or unit not in units:
        raise ValueError(f"not a duration like 250ms, 30s, 5m or 1h: {text!r}")
    return int(number) * units[unit]


@dataclass(frozen=True)
class Analysis:
    """How a canary is judged: each ``interval``, the canary pods' own counters.

    A rule that is None is not checked; admission asks for at least one.
    """

    interval_s: float = 30.0
    min_requests: int = 20  # per interval, on the canary's pods, client errors left out
    min_success_rate: float | None = None  # percent
    max_p99_s: float | None = None
    max_p99_ratio: float | None = None  # to the stable revision's p99, same interval
    failure_limit: int = 1  # failed intervals that abort


@dataclass(frozen=True)
class Autoscaling:
    """Replicas from the in-flight requests the runtime reports, within [min, max]."""

    min_replicas: int
    max_replicas: int
    target_in_flight: float  # per replica
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 300.0


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
    analysis: Analysis | None = None


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
    gpu_claim: GpuClaim | None
    env: tuple[Mapping[str, Any], ...]
    batching: Batching
    precision: str | None  # MODELPLANE_PRECISION; None: the runtime's default (float32)
    replicas: int
    rollout: Rollout
    revision_history_limit: int
    pod: PodOverrides
    autoscaling: Autoscaling | None = None
    refresh_s: float | None = None  # spec.model.refreshInterval: re-resolve the oci:// tag
    delivery: ModelDelivery = ModelDelivery.FETCH
    server: Server = field(default_factory=Server)

    @property
    def gpus_per_replica(self) -> int:
        """GPUs (or MIG slices, or shared GPU replicas) one replica asks for, in either mode."""
        return self.gpu_claim.count if self.gpu_claim is not None else self.gpu.count

    @property
    def uses_gpu(self) -> bool:
        return self.gpus_per_replica > 0

    @property
    def device(self) -> str:
        """Where the runtime computes (MODELPLANE_DEVICE): cuda when GPUs are requested,
        unless runtime.env names the device (an accelerator resource that the runtime
        does not compute on, or a stand-in for a GPU on a CPU node)."""
        chosen = [e.get("value") for e in self.env if e.get("name") == "MODELPLANE_DEVICE"]
        if chosen and str(chosen[-1] or "").strip():
            return str(chosen[-1]).strip().lower()  # as the runtime reads it
        return "cuda" if self.uses_gpu else "cpu"

    @property
    def gpus_requested(self) -> int:
        return self.replicas * self.gpus_per_replica


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
    gpu_claim = _gpu_claim(runtime, gpu)
    resources = runtime.get("resources") or {}
    precision = _precision(runtime, gpu.count > 0 or gpu_claim is not None)
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
        gpu_claim=gpu_claim,
        env=tuple(runtime.get("env") or ()),
        batching=_batching(runtime.get("batching") or {}),
        precision=precision,
        replicas=_int(spec, "replicas", 1, "spec"),
        rollout=_rollout(rollout),
        revision_history_limit=_int(spec, "revisionHistoryLimit", 5, "spec"),
        pod=_pod(pod),
        autoscaling=_autoscaling(spec.get("autoscaling")),
        refresh_s=_refresh(model, uri),
        delivery=_delivery(model, uri),
        server=_server(runtime, spec),
    )


def _server(runtime: Mapping[str, Any], spec: Mapping[str, Any]) -> Server:
    raw = runtime.get("server") or {}
    if not isinstance(raw, Mapping):
        raise SpecError("spec.runtime.server must be an object")
    text = str(raw.get("kind") or ServerKind.MODELPLANE)
    try:
        kind = ServerKind(text)
    except ValueError:
        choices = ", ".join(k.value for k in ServerKind)
        raise SpecError(f"spec.runtime.server.kind {text!r} is not one of {choices}") from None
    server = Server(
        kind=kind,
        command=_strings(raw, "command"),
        args=_strings(raw, "args"),
        readiness_path=_path(raw, "readinessPath"),
        liveness_path=_path(raw, "livenessPath"),
        metrics_path=_path(raw, "metricsPath"),
        metrics_port=_int(raw, "metricsPort", 0, "spec.runtime.server", minimum=0) or None,
    )
    if kind is ServerKind.CUSTOM and not (runtime.get("image") and server.readiness_path):
        raise SpecError(
            "a custom server needs spec.runtime.image and spec.runtime.server.readinessPath"
        )
    _check_metric_rules(kind, spec)
    return server


def _check_metric_rules(kind: ServerKind, spec: Mapping[str, Any]) -> None:
    """Refuse analysis and autoscaling rules the server's metrics cannot answer, rather
    than judge a canary or scale on figures that would always read zero."""
    analysis = ((spec.get("rollout") or {}).get("canary") or {}).get("analysis") or {}
    if spec.get("autoscaling") and kind not in HAS_IN_FLIGHT:
        raise SpecError(
            f"spec.autoscaling scales on in-flight requests, which the {kind} server does "
            "not export; remove it (or scale with an HPA on the server's own metrics)"
        )
    if analysis and kind not in COUNTS_OUTCOMES:
        raise SpecError(
            f"spec.rollout.canary.analysis reads requests by outcome, which a {kind} "
            "server's metrics are not known to count"
        )
    latency_rules = {"maxP99Latency", "maxP99LatencyRatio"} & set(analysis)
    if latency_rules and kind not in HAS_LATENCY_HISTOGRAM:
        raise SpecError(
            f"spec.rollout.canary.analysis.{sorted(latency_rules)[0]} needs a latency "
            f"histogram, which the {kind} server does not export; judge it by minSuccessRate"
        )


def _strings(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"spec.runtime.server.{key} must be a list of strings")
    return tuple(value)


def _path(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise SpecError(f"spec.runtime.server.{key} must be an HTTP path starting with /")
    return value


def _delivery(model: Mapping[str, Any], uri: str) -> ModelDelivery:
    text = str(model.get("delivery") or ModelDelivery.FETCH)
    try:
        delivery = ModelDelivery(text)
    except ValueError:
        choices = ", ".join(d.value for d in ModelDelivery)
        raise SpecError(f"spec.model.delivery {text!r} is not one of {choices}") from None
    if delivery is ModelDelivery.IMAGE_VOLUME and not uri.startswith("oci://"):
        raise SpecError("spec.model.delivery ImageVolume needs an oci:// uri")
    return delivery


def _refresh(model: Mapping[str, Any], uri: str) -> float | None:
    text = model.get("refreshInterval")
    if text is None:
        return None
    if not uri.startswith("oci://"):
        raise SpecError("spec.model.refreshInterval needs an oci:// uri")
    try:
        return max(10.0, parse_duration(str(text)))
    except ValueError as exc:
        raise SpecError(f"spec.model.refreshInterval: {exc}") from None


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
    if uri.startswith("oci://"):
        try:
            oci.parse_oci_uri(uri)
        except oci.ReferenceError as exc:
            raise SpecError(f"spec.model.uri: {exc}") from None
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
            resource=str(gpu_raw.get("resource") or GPU_RESOURCE),
        )
        if not _EXTENDED_RESOURCE.match(gpu.resource) or "kubernetes.io/" in gpu.resource:
            raise SpecError(
                "spec.runtime.gpu.resource must be an extended resource such as nvidia.com/gpu, "
                "nvidia.com/mig-1g.10gb or nvidia.com/gpu.shared"
            )
    resources = runtime.get("resources") or {}
    for part in ("requests", "limits"):
        for name in resources.get(part) or {}:
            if str(name).startswith("nvidia.com/"):
                raise SpecError(
                    f"set GPUs with spec.runtime.gpu.count (and .resource for MIG or shared GPUs), "
                    f"not resources.{part}"
                )
    return gpu


def _gpu_claim(runtime: Mapping[str, Any], gpu: Gpu) -> GpuClaim | None:
    raw = runtime.get("gpuClaim")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SpecError("spec.runtime.gpuClaim must be an object")
    if gpu.count:
        raise SpecError(
            "spec.runtime.gpu (extended resources) and spec.runtime.gpuClaim (a device claim) "
            "both ask for GPUs: keep one (remove runtime.gpu, or set its count to 0)"
        )
    mig = raw.get("migProfile") or None
    claim = GpuClaim(
        count=_int(raw, "count", 1, "spec.runtime.gpuClaim", minimum=1),
        device_class=str(raw.get("deviceClassName") or (MIG_CLASS if mig else GPU_CLASS)),
        product=raw.get("product") or None,
        min_memory=_claim_memory(raw.get("minMemory")),
        mig_profile=mig,
        selectors=tuple(str(s) for s in raw.get("selectors") or ()),
        sharing=_sharing(raw.get("sharing")),
    )
    _check_claim(claim)
    return claim


def _claim_memory(value: Any) -> str | None:
    if value is None:
        return None
    if not _QUANTITY.match(str(value)):
        raise SpecError("spec.runtime.gpuClaim.minMemory must be a quantity such as 40Gi")
    return str(value)


def _sharing(raw: Any) -> Sharing | None:
    if raw is None:
        return None
    strategies = ", ".join(s.value for s in SharingStrategy)
    try:
        strategy = SharingStrategy(str((raw or {}).get("strategy")))
    except ValueError:
        message = f"spec.runtime.gpuClaim.sharing.strategy must be one of {strategies}"
        raise SpecError(message) from None
    return Sharing(strategy, dict(raw.get("config") or {}))


def _check_claim(claim: GpuClaim) -> None:
    """What the CRD's rules refuse at admission, for objects admitted before them."""
    if claim.product is not None and not _PRODUCT_NAME.match(str(claim.product)):
        raise SpecError(
            "spec.runtime.gpuClaim.product must be a product name such as "
            "'NVIDIA A100-SXM4-80GB' (letters, digits, spaces, '-', '_', '.', '(', ')')"
        )
    if claim.mig_profile is not None:
        if not _MIG_PROFILE.match(str(claim.mig_profile)):
            raise SpecError("spec.runtime.gpuClaim.migProfile must be a profile such as 1g.10gb")
        if claim.device_class != MIG_CLASS:
            raise SpecError(
                f"spec.runtime.gpuClaim.migProfile uses the {MIG_CLASS} DeviceClass: "
                f"remove deviceClassName or set it to {MIG_CLASS}"
            )
        if claim.sharing is not None and claim.sharing.strategy is SharingStrategy.TIME_SLICING:
            raise SpecError(
                "MIG devices are shared through MPS only: set "
                "spec.runtime.gpuClaim.sharing.strategy to MPS, or remove migProfile"
            )


def _precision(runtime: Mapping[str, Any], on_gpu: bool) -> str | None:
    precision = runtime.get("precision") or None
    if precision is not None and precision not in PRECISIONS:
        raise SpecError(f"spec.runtime.precision must be one of {', '.join(PRECISIONS)}")
    if precision in ("float16", "bfloat16") and not on_gpu:
        raise SpecError(
            f"spec.runtime.precision {precision} runs on a GPU "
            "(runtime.gpu.count or runtime.gpuClaim)"
        )
    if precision == "int8" and on_gpu:
        raise SpecError(
            "spec.runtime.precision int8 runs on CPUs: set runtime.gpu.count to 0 "
            "and remove runtime.gpuClaim"
        )
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
        analysis=_analysis(canary.get("analysis")),
    )


def _seconds(raw: Mapping[str, Any], key: str, default: float | None, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return default
    try:
        return parse_duration(str(value))
    except ValueError:
        raise SpecError(f"{where}.{key} must be a duration such as 250ms, 30s or 5m") from None


def _number(raw: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SpecError(f"{where}.{key} must be a number from {low:g} to {high:g}")
    return float(value)


def _analysis(raw: Any) -> Analysis | None:
    if raw is None:
        return None
    where = "spec.rollout.canary.analysis"
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be an object")
    analysis = Analysis(
        interval_s=_seconds(raw, "interval", 30.0, where) or 30.0,
        min_requests=_int(raw, "minRequests", 20, where, minimum=1),
        min_success_rate=_number(raw, "minSuccessRate", where, 0, 100),
        max_p99_s=_seconds(raw, "maxP99Latency", None, where),
        max_p99_ratio=_number(raw, "maxP99LatencyRatio", where, 1, 1000),
        failure_limit=_int(raw, "failureLimit", 1, where, minimum=1),
    )
    if (analysis.min_success_rate, analysis.max_p99_s, analysis.max_p99_ratio) == (None,) * 3:
        raise SpecError(
            f"{where} needs a rule: minSuccessRate, maxP99Latency or maxP99LatencyRatio"
        )
    return analysis


def _autoscaling(raw: Any) -> Autoscaling | None:
    if raw is None:
        return None
    where = "spec.autoscaling"
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be an object")
    low = _int(raw, "minReplicas", 1, where, minimum=1)
    high = _int(raw, "maxReplicas", low, where, minimum=1)
    if high < low:
        raise SpecError(f"{where}.maxReplicas ({high}) is below minReplicas ({low})")
    target = _number(raw, "targetInFlight", where, 0.1, 10000)
    if target is None:
        raise SpecError(f"{where}.targetInFlight is required (in-flight requests per replica)")
    return Autoscaling(
        min_replicas=low,
        max_replicas=high,
        target_in_flight=target,
        scale_up_window_s=_seconds(raw, "scaleUpStabilization", 0.0, where) or 0.0,
        scale_down_window_s=_seconds(raw, "scaleDownStabilization", 300.0, where) or 0.0,
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
