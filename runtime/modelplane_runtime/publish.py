"""``modelplane package --push oci://…``: a packaged model folder as an OCI image.

The image is what an image volume mounts at /mnt/models and what the storage initializer
unpacks there (modelplane_oci.image). Credentials come from a Docker config
(MODELPLANE_REGISTRY_AUTH_FILE, REGISTRY_AUTH_FILE, ~/.docker/config.json) or from
MODELPLANE_REGISTRY_USERNAME and MODELPLANE_REGISTRY_PASSWORD; a private CA from
MODELPLANE_REGISTRY_CA_FILE.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import modelplane_oci as oci
from modelplane_oci import image as oci_image

from .metadata import ARTIFACT_FILE, METADATA_FILE, ModelMetadata

VERSION_ANNOTATION = "io.modelplane.model.version"
TORCH_ANNOTATION = "io.modelplane.torch.version"


class PublishError(Exception):
    """The folder or the push failed; the message is safe to print."""


def push_model(folder: Path, uri: str, meta: ModelMetadata | None = None,
               env: Mapping[str, str] | None = None) -> oci.Reference:  # fmt: skip
    """Push ``folder`` (model.pt2, metadata.json) to ``uri``; the reference by digest."""
    env = dict(os.environ) if env is None else env
    for required in (ARTIFACT_FILE, METADATA_FILE):
        if not (folder / required).is_file():
            raise PublishError(f"{folder} has no {required}: package the model first")
    try:
        ref = oci.parse_oci_uri(uri)
        registry = oci.registry_for(ref, (oci.docker_config_from_env(env),), oci.ca_from_env(env))
        explicit = oci.env_credentials(env)
        if explicit is not None:
            registry.credentials = explicit
        annotations = {oci_image.TITLE: (meta.name if meta else "") or ref.repository}
        if meta is not None:
            annotations[TORCH_ANNOTATION] = meta.torch_version
        if ref.tag:
            annotations[VERSION_ANNOTATION] = ref.tag
        with tempfile.TemporaryDirectory(prefix="modelplane-push-") as scratch:
            return oci_image.push_folder(
                registry, ref, folder, annotations, Path(scratch)
            ).reference
    except oci.RegistryError as exc:
        raise PublishError(str(exc)) from None
