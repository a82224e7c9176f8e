"""Operator-wide settings, filled from command-line flags or the environment."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RUNTIME_IMAGE = "ghcr.io/modelplane/runtime:0.1.0"
FIELD_MANAGER = "modelplane"


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    storage_initializer_image: str | None = None  # None: the runtime image
    cluster_domain: str = "cluster.local"
    field_manager: str = FIELD_MANAGER
