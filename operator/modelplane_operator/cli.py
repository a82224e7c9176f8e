"""``modelplane-operator``: run the ModelDeployment operator."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server

from . import handlers, memory
from .config import (
    DEFAULT_GPU_RUNTIME_IMAGE,
    DEFAULT_RUNTIME_IMAGE,
    DEFAULT_STORAGE_IMAGE,
    DEFAULT_TORCHSERVE_IMAGE,
    DEFAULT_TRITON_IMAGE,
    DEFAULT_VLLM_IMAGE,
    OperatorConfig,
)
from .controller import Controller


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="modelplane-operator", description=__doc__)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--runtime-image", default=env("MODELPLANE_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE)
    )
    p.add_argument(
        "--gpu-runtime-image",
        default=env("MODELPLANE_GPU_RUNTIME_IMAGE", DEFAULT_GPU_RUNTIME_IMAGE),
        help="runtime image of models that request GPUs (torch's CUDA build)",
    )
    p.add_argument(
        "--storage-initializer-image",
        default=env("MODELPLANE_STORAGE_IMAGE", DEFAULT_STORAGE_IMAGE),
        help="image of the storage-initializer init container (http, file, pvc, s3, gs)",
    )
    for server, default in (
        ("torchserve", DEFAULT_TORCHSERVE_IMAGE),
        ("triton", DEFAULT_TRITON_IMAGE),
        ("vllm", DEFAULT_VLLM_IMAGE),
    ):
        p.add_argument(
            f"--{server}-image",
            default=env(f"MODELPLANE_{server.upper()}_IMAGE", default),
            help=f"image of runtime.server.kind {server} when runtime.image is not set",
        )
    p.add_argument(
        "--pin-image-registries",
        default=env("MODELPLANE_PIN_IMAGE_REGISTRIES", ""),
        help="comma-separated registries (host[:port], or *) whose runtime-image tags are "
        "resolved to digests when a revision is made; oci:// models are always pinned",
    )
    p.add_argument(
        "--registry-ca-file",
        default=env("MODELPLANE_REGISTRY_CA_FILE", ""),
        help="PEM bundle trusted for registries besides the system's (a private CA)",
    )
    p.add_argument(
        "--insecure-registries",
        default=env("MODELPLANE_INSECURE_REGISTRIES", ""),
        help="comma-separated registries served over plain HTTP (never for production)",
    )
    p.add_argument("--cluster-domain", default=env("MODELPLANE_CLUSTER_DOMAIN", "cluster.local"))
    p.add_argument("--metrics-port", type=int, default=int(env("MODELPLANE_METRICS_PORT", "9090")))
    p.add_argument("--health-port", type=int, default=int(env("MODELPLANE_HEALTH_PORT", "8081")))
    p.add_argument("--bind-address", default=env("MODELPLANE_BIND_ADDRESS", "0.0.0.0"))
    p.add_argument(
        "--log-format",
        choices=["json", "plain", "full"],
        default=env("MODELPLANE_LOG_FORMAT", "json"),
    )
    p.add_argument("--resync-seconds", type=float, default=120.0)
    p.add_argument("--peering", default=None, help="kopf peering name for several replicas")
    p.add_argument("--priority", type=int, default=0, help="kopf peering priority")
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=15,
        help="seconds after its last keep-alive that a silent replica is presumed dead",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(env("MODELPLANE_WORKERS", "8")),
        help="threads reconciling ModelDeployments (each object is handled by one at a time)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _hosts(text: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in text.split(",") if h.strip())


def main(argv: list[str] | None = None) -> int:
    memory.limit_malloc_arenas()
    args = build_parser().parse_args(argv)
    controller = Controller(
        OperatorConfig(
            runtime_image=args.runtime_image,
            gpu_runtime_image=args.gpu_runtime_image,
            storage_initializer_image=args.storage_initializer_image,
            torchserve_image=args.torchserve_image,
            triton_image=args.triton_image,
            vllm_image=args.vllm_image,
            cluster_domain=args.cluster_domain,
            pin_image_registries=_hosts(args.pin_image_registries),
            registry_ca=Path(args.registry_ca_file).read_text() if args.registry_ca_file else "",
            insecure_registries=_hosts(args.insecure_registries),
        ),
        resync_seconds=args.resync_seconds,
        peering_lifetime=args.peering_lifetime,
        workers=max(1, args.workers),
    )
    kopf.configure(
        verbose=args.verbose,
        log_format={
            "json": kopf.LogFormat.JSON,
            "plain": kopf.LogFormat.PLAIN,
            "full": kopf.LogFormat.FULL,
        }[args.log_format],
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind_address)
    peering: dict[str, Any] = (
        {"peering_name": args.peering, "priority": args.priority}
        if args.peering
        else {"standalone": True}
    )
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz",
        memo=handlers.memo(controller),
        **peering,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
