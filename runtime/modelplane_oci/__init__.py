"""OCI registries for models and images: references, the distribution API, model images.

Shared by the operator (it resolves tags to digests), the storage initializer (it pulls
a model image) and ``modelplane package --push``; it imports neither of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .reference import Reference, ReferenceError, parse_oci_uri, parse_reference
from .registry import (
    AuthFailed,
    Credentials,
    Descriptor,
    NotFound,
    Registry,
    RegistryError,
    Unreachable,
    credentials_from_docker_config,
)

__all__ = [
    "AuthFailed",
    "Credentials",
    "Descriptor",
    "NotFound",
    "Reference",
    "ReferenceError",
    "Registry",
    "RegistryError",
    "Unreachable",
    "credentials_from_docker_config",
    "docker_config_from_env",
    "parse_oci_uri",
    "parse_reference",
    "registry_for",
]


def registry_for(
    ref: Reference,
    docker_configs: tuple[Mapping[str, Any], ...] = (),
    ca_pem: str = "",
    insecure_hosts: tuple[str, ...] = (),
) -> Registry:
    """A client of ``ref``'s registry with the first config's credentials for its host."""
    creds = None
    for config in docker_configs:
        creds = credentials_from_docker_config(config, ref.host)
        if creds is not None:
            break
    return Registry(ref.api_host, creds, ca_pem, insecure=ref.host in insecure_hosts)


def docker_config_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Credentials on a workstation or in a pod: MODELPLANE_REGISTRY_AUTH_FILE, REGISTRY_AUTH_FILE
    or ~/.docker/config.json, then MODELPLANE_REGISTRY_USERNAME/PASSWORD for one host."""
    for candidate in (
        env.get("MODELPLANE_REGISTRY_AUTH_FILE"),
        env.get("REGISTRY_AUTH_FILE"),
        str(Path(env.get("HOME", "~")).expanduser() / ".docker" / "config.json"),
    ):
        if candidate and Path(candidate).is_file():
            try:
                loaded = json.loads(Path(candidate).read_text())
            except ValueError:
                raise RegistryError(f"{candidate} is not a Docker config (JSON)") from None
            return loaded if isinstance(loaded, dict) else {}
    return {}


def env_credentials(env: Mapping[str, str]) -> Credentials | None:
    user = env.get("MODELPLANE_REGISTRY_USERNAME", "")
    return Credentials(user, env.get("MODELPLANE_REGISTRY_PASSWORD", "")) if user else None


def ca_from_env(env: Mapping[str, str] | None = None) -> str:
    """Extra trust: MODELPLANE_REGISTRY_CA (PEM text) or MODELPLANE_REGISTRY_CA_FILE."""
    env = os.environ if env is None else env
    if env.get("MODELPLANE_REGISTRY_CA"):
        return env["MODELPLANE_REGISTRY_CA"]
    path = env.get("MODELPLANE_REGISTRY_CA_FILE", "")
    return Path(path).read_text() if path else ""
