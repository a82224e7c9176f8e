"""Image and artifact references: ``host[:port]/repo[:tag][@sha256:...]``.

The same rules as the container runtimes': a first path component without a dot or a
colon (and not ``localhost``) is a Docker Hub repository, and a bare name there is an
official ``library/`` image. ``oci://`` model URIs are references with a scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
OCI_SCHEME = "oci://"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_PART = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class ReferenceError(ValueError):
    """A reference that names no image."""


@dataclass(frozen=True)
class Reference:
    """One image or artifact in one registry, by tag, digest or both."""

    host: str  # as written (docker.io for Docker Hub)
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def api_host(self) -> str:
        """Where its registry's API answers."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def version(self) -> str:
        """What a manifest request names: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def local_only(self) -> bool:
        """``localhost/...`` without a port: an image in a node's store, in no registry."""
        return self.host == "localhost"

    def pinned(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def uri(self) -> str:
        return OCI_SCHEME + str(self)


def parse_reference(text: str) -> Reference:
    """An image reference as the kubelet takes it: ``nginx``, ``ghcr.io/a/b:1``, ``h:5000/m@…``."""
    rest = text.strip()
    if not rest or any(c.isspace() for c in rest):
        raise ReferenceError(f"not an image reference: {text!r}")
    rest, _, digest = rest.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ReferenceError(f"{text!r}: a digest is sha256: and 64 lowercase hex digits")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    else:
        host, path = DOCKER_HUB, rest
        if "/" not in path:
            path = f"library/{path}"
    repository, tag = path, ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
        if not _TAG.match(tag):
            raise ReferenceError(f"{text!r}: {tag!r} is not a valid tag")
    if not repository or not all(_REPO_PART.match(p) for p in repository.split("/")):
        raise ReferenceError(
            f"{text!r}: the repository must be lowercase letters, digits and . _ - separators"
        )
    return Reference(host=host, repository=repository, tag=tag, digest=digest)


def parse_oci_uri(uri: str) -> Reference:
    """``oci://host/repo:tag`` (the host is required: a model has no default registry)."""
    if not uri.startswith(OCI_SCHEME):
        raise ReferenceError(f"not an oci:// URI: {uri!r}")
    body = uri[len(OCI_SCHEME) :]
    first = body.partition("/")[0]
    if "/" not in body or not ("." in first or ":" in first or first == "localhost"):
        raise ReferenceError(
            f"{uri!r}: an oci:// URI names its registry, e.g. oci://registry.example.com/models/resnet:1"
        )
    return parse_reference(body)
