"""A small client of the OCI distribution API: resolve a tag, pull and push an image.

Only what modelplane needs of it (``HEAD``/``GET``/``PUT`` manifests, blobs by digest,
monolithic uploads), written against the OCI distribution specification with the
standard library alone, so that the operator, the storage initializer and ``modelplane
package`` share it without new dependencies. Authentication follows the registries'
challenges: ``Basic`` (distribution's htpasswd) and ``Bearer`` tokens (Docker Hub, GHCR,
Harbor, distribution's token auth), with credentials from a Docker config
(``kubernetes.io/dockerconfigjson``).

Errors are typed by what a user must do about them (``NotFound``, ``AuthFailed``,
``Unreachable``) and carry the registry's own words. Credentials never appear in them.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reference import Reference

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CHUNK = 1 << 20
TIMEOUT_S = 15.0
MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's own recommendation


class RegistryError(Exception):
    """Talking to a registry failed; the message is safe to show (no credentials)."""


class NotFound(RegistryError):
    """The repository, tag or digest does not exist."""


class AuthFailed(RegistryError):
    """The registry wants credentials, or refused the ones given."""


class Unreachable(RegistryError):
    """No answer (DNS, connection, TLS, timeout) or a server error."""


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # Docker config's identitytoken (OAuth2 refresh token)

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, ...)"


def credentials_from_docker_config(config: Mapping[str, Any], host: str) -> Credentials | None:
    """The entry of ``auths`` for ``host`` (``.dockerconfigjson``, ``~/.docker/config.json``)."""
    auths = config.get("auths") or {}
    wanted = {host, f"https://{host}", f"http://{host}"}
    if host in ("docker.io", "registry-1.docker.io"):
        wanted |= {"docker.io", "index.docker.io", "https://index.docker.io/v1/"}
    for key, entry in auths.items():
        bare = key.rstrip("/")
        if bare in wanted or bare.split("://", 1)[-1].split("/", 1)[0] in wanted:
            return _credentials(entry or {})
    return None


def _credentials(entry: Mapping[str, Any]) -> Credentials:
    if entry.get("auth"):
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    else:
        user, password = str(entry.get("username", "")), str(entry.get("password", ""))
    return Credentials(user, password, str(entry.get("identitytoken", "")))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Registry:
    """One registry host; reuse it for a reference's several requests (tokens are kept)."""

    host: str  # host[:port] of the API
    credentials: Credentials | None = None
    ca_pem: str = ""  # extra trust, PEM text (a private registry's CA)
    insecure: bool = False  # plain HTTP: only for registries declared insecure
    timeout_s: float = TIMEOUT_S
    _authorization: dict[str, str] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ reading
    def resolve(self, ref: Reference) -> Descriptor:
        """The digest its tag names now (a digest reference resolves to itself)."""
        path = f"/v2/{ref.repository}/manifests/{ref.version}"
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self._request("HEAD", path, ref, accept)
        digest = response.headers.get("docker-content-digest", "")
        media_type = response.headers.get("content-type", "").split(";")[0]
        size = int(response.headers.get("content-length") or 0)
        if not digest:  # some registries give it only with the body
            body = self._request("GET", path, ref, accept).body
            digest, size = "sha256:" + hashlib.sha256(body).hexdigest(), len(body)
        if ref.digest and digest != ref.digest:
            raise RegistryError(f"{ref}: the registry answered for {digest}")
        return Descriptor(media_type, digest, size)

    def manifest(
        self, ref: Reference, platform: str = "linux/amd64"
    ) -> tuple[Descriptor, dict[str, Any]]:
        """The image manifest (an index is followed to ``platform``'s entry, or its only one)."""
        descriptor, manifest = self._manifest(ref, ref.version)
        if descriptor.media_type in INDEX_TYPES or "manifests" in manifest:
            entry = _platform_entry(manifest, platform, ref)
            descriptor, manifest = self._manifest(ref, entry["digest"])
        return descriptor, manifest

    def _manifest(self, ref: Reference, version: str) -> tuple[Descriptor, dict[str, Any]]:
        path = f"/v2/{ref.repository}/manifests/{version}"
        response = self._request("GET", path, ref, {"Accept": ", ".join(MANIFEST_TYPES)})
        if len(response.body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{ref}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(response.body).hexdigest()
        if version.startswith("sha256:") and digest != version:
            raise RegistryError(f"{ref}: manifest digest {digest} is not the {version} asked for")
        try:
            manifest = json.loads(response.body)
        except ValueError:
            raise RegistryError(f"{ref}: the manifest is not JSON") from None
        media_type = manifest.get("mediaType") or response.headers.get("content-type", "")
        return Descriptor(media_type.split(";")[0], digest, len(response.body)), manifest

    def fetch_blob(self, ref: Reference, digest: str, target: Path) -> None:
        """Write the blob to ``target``, checking its digest on the way."""
        response = self._open("GET", f"/v2/{ref.repository}/blobs/{digest}", ref)
        hasher = hashlib.sha256()
        with target.open("wb") as sink:
            for chunk in response:
                hasher.update(chunk)
                sink.write(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            target.unlink()
            raise RegistryError(f"{ref}: blob {digest} arrived with other content")

    # ------------------------------------------------------------------ writing
    def push_blob(self, ref: Reference, source: Path, digest: str) -> None:
        """Upload a blob (one monolithic PUT), unless the repository has it already."""
        path = f"/v2/{ref.repository}/blobs/{digest}"
        if self._request("HEAD", path, ref, expect=(200, 404)).status == 200:
            return
        started = self._request("POST", f"/v2/{ref.repository}/blobs/uploads/", ref, expect=(202,))
        location = started.headers.get("location", "")
        if not location:
            raise RegistryError(f"{ref}: the registry gave no upload location")
        target = urllib.parse.urlsplit(location)
        query = f"{target.query}&" if target.query else ""
        upload = f"{target.path}?{query}digest={urllib.parse.quote(digest)}"
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(source.stat().st_size)}  # fmt: skip
        self._request("PUT", upload, ref, headers, body=source, expect=(201,))

    def push_manifest(self, ref: Reference, manifest: bytes, media_type: str = OCI_MANIFEST) -> str:
        """PUT the manifest under the reference's tag; its digest."""
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self._request(
            "PUT",
            f"/v2/{ref.repository}/manifests/{ref.tag or digest}",
            ref,
            {"Content-Type": media_type},
            body=manifest,
            expect=(201,),
        )
        return digest

    # ---------------------------------------------------------------- transport
    def _request(
        self,
        method: str,
        path: str,
        ref: Reference,
        headers: Mapping[str, str] | None = None,
        body: bytes | Path | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> _Response:
        response = self._exchange(method, path, ref, headers or {}, body)
        data = response.read() if method != "HEAD" else b""
        result = _Response(response.status, _lower(response.getheaders()), data)
        response.close()
        if result.status not in expect:
            raise _error(result, ref, method)
        return result

    def _open(self, method: str, path: str, ref: Reference) -> Iterator[bytes]:
        """A streamed GET, following redirects (blob stores) without our credentials."""
        response = self._exchange(method, path, ref, {}, None)
        for _ in range(MAX_REDIRECTS):
            if response.status not in (301, 302, 303, 307, 308):
                break
            location = response.getheader("location") or ""
            response.close()
            response = _plain_get(location, self._context(), self.timeout_s)
        if response.status != 200:
            raise _error(
                _Response(response.status, _lower(response.getheaders()), response.read()),
                ref,
                method,
            )
        return _chunks(response)

    def _exchange(
        self,
        method: str,
        path: str,
        ref: Reference,
        headers: Mapping[str, str],
        body: bytes | Path | None,
    ) -> http.client.HTTPResponse:
        scope = (
            f"repository:{ref.repository}:{'pull,push' if method in ('POST', 'PUT') else 'pull'}"
        )
        response = self._send(method, path, {**headers, **self._auth_header(scope)}, body)
        if response.status != 401:
            return response
        challenge = response.getheader("www-authenticate") or ""
        response.read()
        response.close()
        self._authorization[scope] = self._answer(challenge, scope, ref)
        return self._send(method, path, {**headers, **self._auth_header(scope)}, body)

    def _auth_header(self, scope: str) -> dict[str, str]:
        value = self._authorization.get(scope)
        return {"Authorization": value} if value else {}

    def _answer(self, challenge: str, scope: str, ref: Reference) -> str:
        scheme, params = _parse_challenge(challenge)
        creds = self.credentials
        if scheme == "basic":
            if creds is None or not creds.username:
                raise AuthFailed(
                    f"{ref.host} requires credentials (an imagePullSecret or secretRef)"
                )
            return "Basic " + _basic(creds)
        if scheme != "bearer" or "realm" not in params:
            raise AuthFailed(
                f"{ref.host} asked for an unsupported authentication: {challenge[:80]!r}"
            )
        return "Bearer " + self._token(params, scope, ref)

    def _token(self, params: Mapping[str, str], scope: str, ref: Reference) -> str:
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        realm = urllib.parse.urlsplit(params["realm"])
        url = f"{params['realm']}{'&' if realm.query else '?'}{urllib.parse.urlencode(query)}"
        headers = {}
        if self.credentials is not None and self.credentials.username:
            headers["Authorization"] = "Basic " + _basic(self.credentials)
        response = _plain_get(url, self._context(), self.timeout_s, headers)
        data = response.read()
        if response.status in (401, 403):
            raise AuthFailed(
                f"{ref.host} refused the credentials: {_words(data) or response.status}"
            )
        if response.status != 200:
            raise Unreachable(f"{ref.host}'s token service answered HTTP {response.status}")
        try:
            answer = json.loads(data)
            token: str = answer.get("token") or answer["access_token"]
        except (ValueError, KeyError):
            raise RegistryError(f"{ref.host}'s token service gave no token") from None
        return token

    def _send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | Path | None
    ) -> http.client.HTTPResponse:
        connection = self._connection(self.host)
        try:
            if isinstance(body, Path):  # streamed from the file, opened again for a retry
                with body.open("rb") as data:
                    connection.request(method, path, body=data, headers=dict(headers))
                    return connection.getresponse()
            connection.request(method, path, body=body, headers=dict(headers))
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise Unreachable(f"{self.host}: {_os_words(exc)}") from None

    def _connection(self, host: str) -> http.client.HTTPConnection:
        if self.insecure:
            return http.client.HTTPConnection(host, timeout=self.timeout_s)
        return http.client.HTTPSConnection(host, timeout=self.timeout_s, context=self._context())

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_pem:
            context.load_verify_locations(cadata=self.ca_pem)
        return context


def _plain_get(
    url: str, context: ssl.SSLContext, timeout: float, headers: Mapping[str, str] | None = None
) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=context)
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    else:
        raise RegistryError(f"a redirect or token realm must be http(s): {parts.scheme!r}")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("GET", target or "/", headers=dict(headers or {}))
        return connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise Unreachable(f"{parts.netloc}: {_os_words(exc)}") from None


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while chunk := response.read(CHUNK):
            yield chunk
    finally:
        response.close()


def _platform_entry(index: Mapping[str, Any], platform: str, ref: Reference) -> Mapping[str, Any]:
    entries = [m for m in index.get("manifests") or () if isinstance(m, Mapping)]
    os_name, _, arch = platform.partition("/")
    for entry in entries:
        p = entry.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch:
            return entry
    if len(entries) == 1:
        return entries[0]
    raise NotFound(f"{ref}: the index has no {platform} manifest")


_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


def _basic(creds: Credentials) -> str:
    return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}


def _words(body: bytes) -> str:
    """The registry's own error messages (the spec's ``{"errors": [...]}``), if any."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


def _error(response: _Response, ref: Reference, method: str) -> RegistryError:
    words = _words(response.body) or f"HTTP {response.status}"
    text = f"{ref}: {words}"
    if response.status == 404:
        return NotFound(text if response.body else f"{ref}: not found (HTTP 404)")
    if response.status in (401, 403):
        return AuthFailed(f"{ref.host} refused the credentials for {ref.repository}: {words}")
    if response.status >= 500 or response.status == 429:
        return Unreachable(f"{ref.host} answered HTTP {response.status}: {words}")
    return RegistryError(f"{method} {text} (HTTP {response.status})")


def _os_words(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verification failed ({exc.verify_message}): is the registry's CA trusted?"
    return " ".join(str(exc).split()) or type(exc).__name__
