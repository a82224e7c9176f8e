"""What each model server needs of its container: command, probe paths, metrics endpoint.

modelplane's own runtime is one server among several; the serving pod, the revisions and
the rollouts are the same for all of them (manifests builds the container from the
``Profile`` this module decides). Every server listens on ``spec.runtime.port`` (each
built-in one is told so in its own flags or environment) and finds the model folder at
``/mnt/models``, filled by the storage initializer. Defaults follow each server's own
documentation; the spec may override any of them, and describes a custom one entirely.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

from . import podmetrics
from .config import OperatorConfig
from .spec import ModelDeploymentSpec, ServerKind

MODEL_DIR = "/mnt/models"
TORCHSERVE_MANAGEMENT_PORT = 8081
TORCHSERVE_METRICS_PORT = 8082
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002


@dataclass(frozen=True)
class Profile:
    """The serving container's server-specific parts, defaults filled in."""

    command: tuple[str, ...] | None  # None: the image's entrypoint
    args: tuple[str, ...]
    readiness_path: str
    liveness_path: str
    metrics_path: str
    metrics_port: int  # the serving port, or the server's own metrics port
    env: tuple[tuple[str, str], ...] = ()  # what the server reads besides MODELPLANE_*


def _modelplane(md: ModelDeploymentSpec) -> Profile:
    return Profile(
        command=("modelplane-runtime",),
        args=(),
        readiness_path=f"/v2/models/{md.model_name}/ready",
        liveness_path="/v2/health/live",
        metrics_path="/metrics",
        metrics_port=md.port,
    )


def mar_file(md: ModelDeploymentSpec) -> str:
    """The archive TorchServe registers: a `.mar` URI keeps its file name in /mnt/models
    (the storage initializer does not unpack it); a tarball or folder holds NAME.mar."""
    name = posixpath.basename(urllib.parse.urlsplit(md.uri).path)
    return name if name.endswith(".mar") else f"{md.model_name}.mar"


def _torchserve(md: ModelDeploymentSpec) -> Profile:
    # modelplane-torchserve runs `torchserve --foreground` and ends the container when
    # the model fails to load (TorchServe keeps /ping Healthy and retries forever).
    # TorchServe takes its addresses from TS_* variables only when its config.properties
    # says enable_envvars_config=true (modelplane's TorchServe image does; with another,
    # keep runtime.port 8080). Logs and temp files go to /tmp: the root is read-only.
    # One worker: each is a Python process with torch (TorchServe defaults to one a CPU).
    # --ncs: no config snapshots, which it would write beside its logs at every change.
    return Profile(
        command=("modelplane-torchserve",),
        args=(
            "--foreground",
            "--ncs",
            "--disable-token-auth",
            "--model-store",
            MODEL_DIR,
            "--models",
            f"{md.model_name}={mar_file(md)}",
        ),
        readiness_path="/ping",
        liveness_path="/ping",
        metrics_path="/metrics",
        metrics_port=TORCHSERVE_METRICS_PORT,
        env=(
            ("TS_INFERENCE_ADDRESS", f"http://0.0.0.0:{md.port}"),
            ("TS_MANAGEMENT_ADDRESS", f"http://127.0.0.1:{TORCHSERVE_MANAGEMENT_PORT}"),
            ("TS_METRICS_ADDRESS", f"http://0.0.0.0:{TORCHSERVE_METRICS_PORT}"),
            ("LOG_LOCATION", "/tmp/logs"),
            ("METRICS_LOCATION", "/tmp/logs"),
            ("TEMP", "/tmp"),
            ("TS_DEFAULT_WORKERS_PER_MODEL", "1"),
        ),
    )


def _triton(md: ModelDeploymentSpec) -> Profile:
    # /mnt/models holds a Triton model repository (<model>/config.pbtxt, <model>/1/...).
    return Profile(
        command=("tritonserver",),
        args=(
            f"--model-repository={MODEL_DIR}",
            f"--http-port={md.port}",
            f"--grpc-port={TRITON_GRPC_PORT}",
            f"--metrics-port={TRITON_METRICS_PORT}",
        ),
        readiness_path="/v2/health/ready",
        liveness_path="/v2/health/live",
        metrics_path="/metrics",
        metrics_port=TRITON_METRICS_PORT,
    )


def _vllm(md: ModelDeploymentSpec) -> Profile:
    # /mnt/models holds a Hugging Face model folder; clients name it by the model's name.
    return Profile(
        command=("vllm", "serve"),
        args=(
            MODEL_DIR,
            "--host=0.0.0.0",
            f"--port={md.port}",
            f"--served-model-name={md.model_name}",
        ),
        readiness_path="/health",
        liveness_path="/health",
        metrics_path="/metrics",
        metrics_port=md.port,
        env=(("HF_HOME", "/tmp/hf"), ("HF_HUB_OFFLINE", "1")),
    )


def _custom(md: ModelDeploymentSpec) -> Profile:
    ready = md.server.readiness_path or "/"  # spec.parse requires it
    return Profile(
        command=None,
        args=(),
        readiness_path=ready,
        liveness_path=ready,
        metrics_path="/metrics",
        metrics_port=md.port,
    )


_DEFAULTS = {
    ServerKind.MODELPLANE: _modelplane,
    ServerKind.TORCHSERVE: _torchserve,
    ServerKind.TRITON: _triton,
    ServerKind.VLLM: _vllm,
    ServerKind.CUSTOM: _custom,
}


def profile(md: ModelDeploymentSpec) -> Profile:
    """The spec's server: its kind's defaults, with what the spec overrides."""
    base = _DEFAULTS[md.server.kind](md)
    s = md.server
    return Profile(
        command=s.command if s.command is not None else base.command,
        args=s.args if s.args is not None else base.args,
        readiness_path=s.readiness_path or base.readiness_path,
        liveness_path=s.liveness_path or base.liveness_path,
        metrics_path=s.metrics_path or base.metrics_path,
        metrics_port=s.metrics_port or base.metrics_port,
        env=base.env,
    )


def metrics_endpoint(md: ModelDeploymentSpec) -> podmetrics.MetricsEndpoint:
    """Where the operator scrapes a serving pod, and how it reads what it gets. Admission
    (spec.parse) lets analysis and autoscaling through only for servers listed here."""
    p = profile(md)
    dialect = podmetrics.DIALECTS.get(md.server.kind.value, podmetrics.MODELPLANE)
    return podmetrics.MetricsEndpoint(p.metrics_port, p.metrics_path, dialect)


def default_image(md: ModelDeploymentSpec, config: OperatorConfig) -> str:
    """The image a server runs when spec.runtime.image is not set (custom always sets it)."""
    match md.server.kind:
        case ServerKind.TORCHSERVE:
            return config.torchserve_image
        case ServerKind.TRITON:
            return config.triton_image
        case ServerKind.VLLM:
            return config.vllm_image
        case _:
            return config.gpu_runtime_image if md.device == "cuda" else config.runtime_image
