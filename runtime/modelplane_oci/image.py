"""A model folder as an OCI image, and back.

The image has one layer holding the folder's files at its root, so that an image volume
mounted at /mnt/models and the storage initializer's copy both put ``model.pt2`` and
``metadata.json`` exactly where the runtime reads them. The layer is reproducible (sorted
members, zero times and owners, fixed modes, gzip without a timestamp): packaging the same
files twice gives the same digest, so pushing again moves nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .reference import Reference
from .registry import OCI_MANIFEST, Registry, RegistryError

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_TYPES = (LAYER_GZIP, LAYER_TAR, DOCKER_LAYER)
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Pushed:
    reference: Reference  # by tag and digest
    size: int  # bytes of the layer


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._sink.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(frozen=True)
class Layer:
    path: Path  # the tar+gzip blob
    digest: str  # of the blob
    diff_id: str  # of the uncompressed tar (the image config's rootfs)
    size: int


def write_layer(folder: Path, target: Path) -> Layer:
    """Every file under ``folder``, at the root, as a reproducible tar+gzip in ``target``;
    streamed, so a model of many GB never sits in memory."""
    with target.open("wb") as sink:
        zipped = _Hashing(sink)
        with gzip.GzipFile(fileobj=zipped, mode="wb", mtime=0) as gz:
            raw = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(folder.rglob("*")):
                    _add(tar, folder, path)
    return Layer(target, zipped.digest, raw.digest, zipped.size)


def _add(tar: tarfile.TarFile, folder: Path, path: Path) -> None:
    rel = path.relative_to(folder).as_posix()
    if any(part.startswith(".") for part in Path(rel).parts):
        return  # scratch and editor files stay out
    info = tar.gettarinfo(str(path), arcname=rel)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    if info.isfile():
        with path.open("rb") as data:
            tar.addfile(info, data)
    elif info.isdir():
        tar.addfile(info)


def image_of(
    folder: Path, annotations: Mapping[str, str], scratch: Path, platform: str = "linux/amd64"
) -> tuple[bytes, Layer, bytes]:
    """(config, layer, manifest) of the image holding ``folder``; the layer in ``scratch``."""
    layer = write_layer(folder, scratch / "layer.tar.gz")
    os_name, _, arch = platform.partition("/")
    config = json.dumps(
        {
            "architecture": arch,
            "os": os_name,
            "config": {"Labels": dict(annotations)},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_GZIP, "digest": layer.digest, "size": layer.size}],
            "annotations": dict(annotations),
        },
        sort_keys=True,
    ).encode()
    return config, layer, manifest


def push_folder(
    registry: Registry, ref: Reference, folder: Path, annotations: Mapping[str, str], scratch: Path
) -> Pushed:
    """Push ``folder`` as an image under ``ref``'s tag; the reference pinned to its digest."""
    if not ref.tag:
        raise RegistryError(f"{ref}: pushing needs a tag (…:1.0.0)")
    config, layer, manifest = image_of(folder, annotations, scratch)
    registry.push_blob(ref, layer.path, layer.digest)
    config_path = scratch / "config.json"
    config_path.write_bytes(config)
    registry.push_blob(ref, config_path, _sha256(config))
    digest = registry.push_manifest(ref, manifest)
    return Pushed(ref.pinned(digest), layer.size)


def pull_layers(registry: Registry, ref: Reference, scratch: Path) -> tuple[str, list[Path]]:
    """Download the image's layers (in order) into ``scratch``: (manifest digest, files).

    Unpacking is the caller's: it owns the rules for what a layer may contain."""
    descriptor, manifest = registry.manifest(ref)
    files = []
    for index, layer in enumerate(manifest.get("layers") or ()):
        media_type = str(layer.get("mediaType", ""))
        if media_type not in LAYER_TYPES:
            raise RegistryError(
                f"{ref}: layer {index} is {media_type!r}; modelplane reads tar and tar+gzip layers"
            )
        target = scratch / f"layer-{index}.tar"
        registry.fetch_blob(ref, str(layer["digest"]), target)
        files.append(target)
    if not files:
        raise RegistryError(f"{ref}: the image has no layers")
    return descriptor.digest, files
