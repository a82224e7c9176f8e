"""Operator-wide settings, filled from command-line flags or the environment."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RUNTIME_IMAGE = "ghcr.io/modelplane/runtime:0.1.0"
# GPU models need torch's CUDA build (runtime/Dockerfile.cuda); the CPU image would
# crash-loop on a GPU node with MODELPLANE_DEVICE=cuda.
DEFAULT_GPU_RUNTIME_IMAGE = "ghcr.io/modelplane/runtime:0.1.0-cuda"
# The storage initializer's own image has s3fs and gcsfs; the runtime image has neither.
DEFAULT_STORAGE_IMAGE = "ghcr.io/modelplane/storage-initializer:0.1.0"
# Other servers' images (spec.runtime.server.kind): TorchServe's is modelplane's build,
# whose config lets TS_* variables set its addresses; Triton's and vLLM's are upstream's.
DEFAULT_TORCHSERVE_IMAGE = "ghcr.io/modelplane/torchserve:0.1.0"
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.12-py3"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.6.6"
FIELD_MANAGER = "modelplane"


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    gpu_runtime_image: str = DEFAULT_GPU_RUNTIME_IMAGE
    storage_initializer_image: str = DEFAULT_STORAGE_IMAGE
    torchserve_image: str = DEFAULT_TORCHSERVE_IMAGE
    triton_image: str = DEFAULT_TRITON_IMAGE
    vllm_image: str = DEFAULT_VLLM_IMAGE
    cluster_domain: str = "cluster.local"
    field_manager: str = FIELD_MANAGER
    # Registries whose runtime-image tags are resolved to digests per revision ("*": all).
    # Off unless configured: resolving needs the operator to reach the registry.
    pin_image_registries: tuple[str, ...] = ()
    registry_ca: str = ""  # PEM: extra trust for registries (a private CA)
    insecure_registries: tuple[str, ...] = ()  # host:port served over plain HTTP
