"""The image store: the registry modelplane's own images reach node-0 through.

``make images`` (hack/images.sh) pushes each image it builds into a CNCF distribution
registry whose storage lives in the cache (``STORE_DIR``), through a writer instance of
its own on a free port of 127.0.0.1. A cluster with a real node serves the same storage
read-only on node-0's address (plain HTTP, declared so in containerd's hosts directory;
the port is kept in ``PORT_FILE``, since image references carry it), and node-0's
containerd pulls from it, as a node pulls from any registry: only the layers it lacks,
so a source change moves one small layer instead of a whole image. Older tags are
deleted and their blobs collected after each push.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from . import addresses, registries
from .components import Component, Site
from .paths import CACHE_DIR

IMAGES_DIR = CACHE_DIR / "images"
STORE_DIR = IMAGES_DIR / "registry"
PORT_FILE = IMAGES_DIR / "registry.port"
REPOSITORY_PREFIX = "modelplane/"
DEFAULT_PORT = 5387  # outside the ephemeral range, so no client socket takes it first
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


def port() -> int:
    """The store's serving port, chosen at the first push and kept."""
    if PORT_FILE.exists():
        return int(PORT_FILE.read_text().strip())
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    PORT_FILE.write_text(f"{DEFAULT_PORT}\n")
    return DEFAULT_PORT


def host() -> str:
    """Where the cluster serves the store: node-0's address, like its other registries."""
    return f"{addresses.NODE_IP}:{port()}"


def write_config(path: Path, address: str, read_only: bool, root: Path = STORE_DIR) -> Path:
    """distribution's configuration over the store: plain HTTP (on addresses nothing off
    this machine reaches), deletes for the writer's pruning, read-only when serving."""
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(registries.distribution_config(root, address, read_only=read_only))
    return path


def prune(address: str, keep: dict[str, str]) -> list[str]:
    """Delete every tag of modelplane/<name> but ``keep[name]``; the deleted references.
    (Their blobs go with ``registry garbage-collect``, run with no writer up.)"""
    deleted = []
    for name, tag in keep.items():
        repo = f"{REPOSITORY_PREFIX}{name}"
        try:
            with urllib.request.urlopen(f"http://{address}/v2/{repo}/tags/list", timeout=10) as r:
                tags = json.load(r).get("tags") or []
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise
        for old in tags:
            if old != tag:
                _delete(f"http://{address}/v2/{repo}/manifests/", old)
                deleted.append(f"{repo}:{old}")
    return deleted


def _delete(manifests: str, tag: str) -> None:
    """Delete a tag's manifest (distribution deletes by digest only)."""
    accept = {"Accept": MANIFEST_TYPES}
    head = urllib.request.Request(manifests + tag, method="HEAD", headers=accept)
    with urllib.request.urlopen(head, timeout=10) as r:
        digest = r.headers["Docker-Content-Digest"]
    delete = urllib.request.Request(manifests + digest, method="DELETE")
    with urllib.request.urlopen(delete, timeout=10):
        pass


def containerd_hosts(hosts_dir: Path) -> None:
    """containerd's hosts.toml for the store: plain HTTP, pull only."""
    folder = hosts_dir / host()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.toml").write_text(
        f'server = "http://{host()}"\n\n[host."http://{host()}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _config_path(c: Site) -> Path:
    return c.dir / "node" / "image-store.yml"


def _prepare(c: Site) -> None:
    (c.dir / "node").mkdir(parents=True, exist_ok=True)
    write_config(_config_path(c), host(), read_only=True)


COMPONENT = Component(
    "image-store",
    lambda c: [c.binary("registry"), "serve", str(_config_path(c))],
    prepare=_prepare,
    ready=lambda c: answers(host()),
    binary="registry",
)
