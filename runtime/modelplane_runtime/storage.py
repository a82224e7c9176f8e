"""`modelplane-storage URI DEST`: the init container that puts a model into /mnt/models.

Sources: file:// and pvc:// paths (a file or a folder), http(s):// files, oci:// model
images (``modelplane package --push``; pulled layer by layer, digests checked), and with the
optional extras s3:// (modelplane[s3]) and gs:// (modelplane[gcs]) through fsspec.
A single file that is a tarball (or zip) is unpacked; an optional sha256 is checked on
the downloaded file before anything is unpacked. Credentials come only from the
environment (a Secret through envFrom). On failure it prints one line and exits 1; the
line also goes to the termination log, where Kubernetes shows it in the pod status.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import modelplane_oci as oci
from modelplane_oci import image as oci_image

from .termination import write_termination_message

CHUNK = 1 << 20
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class StorageError(Exception):
    """A one-line reason the model could not be fetched."""


def redact(uri: str) -> str:
    """Drop user info and query (presigned URLs carry signatures there) from a URI."""
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a bad port or bracket: show no more than the scheme
        scheme = uri.partition("://")[0] if "://" in uri else ""
        return f"{scheme}://<unparseable URI>" if scheme else "<unparseable URI>"
    query = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}"


# In library messages: a URL's user info and query, however the library re-quoted them.
_USERINFO = re.compile(r"(?<=://)[^/\s@'\"]*@")
_QUERY = re.compile(r"(://[^\s'\"?]*)\?[^\s'\"]*")


def _scrub(text: str) -> str:
    return _QUERY.sub(r"\1?<redacted>", _USERINFO.sub("", text))


def _http_headers(env: dict[str, str]) -> dict[str, str]:
    token = env.get("MODELPLANE_STORAGE_BEARER_TOKEN", "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _filesystem(uri: str, env: dict[str, str]) -> tuple[Any, str]:
    """An fsspec filesystem and the path within it, configured from the environment."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise StorageError(f"not a URI: {redact(uri)}")
    import fsspec

    if scheme == "file":
        return fsspec.filesystem("file"), "/" + rest.lstrip("/")
    if scheme == "pvc":
        # The operator mounts the claim at /mnt/pvc; the URI is pvc://<claim>/<path>.
        _claim, _, inner = rest.partition("/")
        root = Path(env.get("MODELPLANE_PVC_ROOT", "/mnt/pvc"))
        return fsspec.filesystem("file"), str(root / inner)
    if scheme in ("http", "https"):
        return fsspec.filesystem(scheme, headers=_http_headers(env)), uri
    if scheme == "s3":
        _require("s3fs", "s3")
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
        if env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"):
            client_kwargs["region_name"] = env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
        anonymous = not env.get("AWS_ACCESS_KEY_ID") and not env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        return fsspec.filesystem("s3", anon=anonymous, client_kwargs=client_kwargs), rest
    if scheme == "gs":
        _require("gcsfs", "gcs")
        token = env.get("GOOGLE_APPLICATION_CREDENTIALS") or "anon"
        return fsspec.filesystem("gs", token=token), rest
    raise StorageError(f"unsupported scheme {scheme!r}: use file, pvc, http, https, s3, gs or oci")


def _require(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise StorageError(
            f"{extra}:// storage needs the optional extra: pip install 'modelplane[{extra}]'"
        ) from None


def _is_tarball(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES)


def _unpack(archive: Path, dest: Path) -> None:
    if zipfile.is_zipfile(archive) and not _is_tarball(archive.name):
        with zipfile.ZipFile(archive) as bundle:
            root = dest.resolve()
            for member in bundle.namelist():
                if not (dest / member).resolve().is_relative_to(root):
                    raise StorageError(f"zip member {member!r} would land outside {dest}")
            bundle.extractall(dest)
        return
    try:
        with tarfile.open(archive) as bundle:
            _refuse_unsafe_members(bundle, dest)
            _extract_tarball(bundle, dest)
    except tarfile.TarError as exc:
        raise StorageError(f"cannot unpack tarball: {exc}") from None


def _refuse_unsafe_members(bundle: tarfile.TarFile, dest: Path) -> None:
    """Absolute paths, members or links landing outside dest, and device files.

    Checked here, not only by tarfile's "data" filter: the filter (and FilterError)
    arrived in Python 3.11.4, and Debian bookworm's python3 is 3.11.2.
    """
    root = dest.resolve()
    for member in bundle.getmembers():
        target = (dest / member.name).resolve()
        if not target.is_relative_to(root):
            raise StorageError(f"unsafe tarball member: {member.name!r} would land outside {dest}")
        if member.isdev() or member.isfifo():
            raise StorageError(f"unsafe tarball member: {member.name!r} is a device or fifo")
        if member.issym() or member.islnk():
            base = target.parent if member.issym() else root
            if not (base / member.linkname).resolve().is_relative_to(root):
                raise StorageError(
                    f"unsafe tarball member: link {member.name!r} points outside {dest}"
                )


def _extract_tarball(bundle: tarfile.TarFile, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4: members were checked above
        bundle.extractall(dest)
        return
    try:
        bundle.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise StorageError(f"unsafe tarball member: {exc}") from None


def _download(fs: Any, path: str, target: Path) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as source, target.open("wb") as sink:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            sink.write(chunk)
    return digest.hexdigest()


def _registry_configs(env: dict[str, str]) -> tuple[dict[str, Any], ...]:
    """Docker configs mounted by the operator (one per pull secret), then the usual places."""
    configs = []
    folder = env.get("MODELPLANE_REGISTRY_AUTH_DIR", "")
    if folder and Path(folder).is_dir():
        for path in sorted(Path(folder).glob("*.json")):
            try:
                configs.append(json.loads(path.read_text()))
            except ValueError:
                raise StorageError(f"{path.name} is not a Docker config (JSON)") from None
    configs.append(oci.docker_config_from_env(env))
    return tuple(configs)


def fetch_oci(uri: str, dest: Path, env: dict[str, str]) -> str:
    """Pull the model image named by an oci:// URI into ``dest``; its manifest digest."""
    try:
        ref = oci.parse_oci_uri(uri)
        insecure = tuple(h for h in env.get("MODELPLANE_INSECURE_REGISTRIES", "").split(",") if h)
        registry = oci.registry_for(ref, _registry_configs(env), oci.ca_from_env(env), insecure)
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as scratch:
            digest, layers = oci_image.pull_layers(registry, ref, Path(scratch))
            for layer in layers:
                _unpack(layer, dest)
        return digest
    except oci.RegistryError as exc:
        raise StorageError(str(exc)) from None


def fetch(uri: str, dest: Path, sha256: str = "", env: dict[str, str] | None = None) -> list[str]:
    """Put the model named by `uri` into `dest`; return the top-level names written."""
    return fetch_model(uri, dest, sha256, env)[0]


def fetch_model(
    uri: str, dest: Path, sha256: str = "", env: dict[str, str] | None = None
) -> tuple[list[str], str]:
    """Put the model named by `uri` into `dest`: the top-level names written, and what was
    fetched: ``pulled sha256:…`` (an oci:// image's manifest digest) or ``content
    sha256:…`` (the folder's content digest, for every other scheme)."""
    env = dict(os.environ) if env is None else env
    if uri.startswith(oci.reference.OCI_SCHEME):
        if sha256:
            raise StorageError("an oci:// model is checked by its digest: give no sha256")
        digest = fetch_oci(uri, dest, env)
        return sorted(p.name for p in dest.iterdir()), f"pulled {digest}"
    names = _fetch_other(uri, dest, sha256, env)
    return names, f"content {content_digest(dest)}"


def _fetch_other(uri: str, dest: Path, sha256: str, env: dict[str, str]) -> list[str]:
    sha256 = sha256.strip().lower()
    if sha256 and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
        raise StorageError("MODELPLANE_STORAGE_SHA256 must be 64 hex digits")
    fs, path = _filesystem(uri, env)
    dest.mkdir(parents=True, exist_ok=True)
    remote_dir = not uri.startswith(("http://", "https://")) and fs.isdir(path)
    if remote_dir:
        if sha256:
            raise StorageError("a sha256 can only be checked on a single file (or tarball)")
        fs.get(path.rstrip("/") + "/", str(dest), recursive=True)
        return sorted(p.name for p in dest.iterdir())
    name = Path(urllib.parse.urlsplit(path).path).name or "model"
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as scratch:
        target = Path(scratch) / name
        actual = _download(fs, path, target)
        if sha256 and actual != sha256:
            raise StorageError(
                f"sha256 mismatch for {redact(uri)}: expected {sha256}, got {actual}"
            )
        if _is_tarball(name) or name.lower().endswith(".zip"):
            _unpack(target, dest)
        else:
            shutil.move(str(target), dest / name)
    return sorted(p.name for p in dest.iterdir())


def content_digest(folder: Path) -> str:
    """One sha256 over what landed in the model folder (each file's path and sha256): the
    same bytes give the same digest whatever URI or archive they came through, and a
    changed object behind an unchanged URI gives another one."""
    listing = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # scratch space, not the model
        file_hash = hashlib.sha256()
        with path.open("rb") as data:
            while chunk := data.read(CHUNK):
                file_hash.update(chunk)
        listing.update(f"{rel}\0{file_hash.hexdigest()}\n".encode())
    return "sha256:" + listing.hexdigest()


def _http_status(uri: str, env: dict[str, str]) -> int | None:
    """The status a HEAD request gets (None: no answer at all)."""
    try:
        request = urllib.request.Request(uri, method="HEAD", headers=_http_headers(env))
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _describe(exc: BaseException, uri: str, env: dict[str, str]) -> str:
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        if not uri.startswith(("http://", "https://")):
            return f"not found: {redact(uri)}"
        # fsspec's HTTP filesystem reports every failed HEAD as not found: ask once more
        # for the status, since a wrong token is not a missing file.
        status = _http_status(uri, env)
        if status in (401, 403):
            return (
                f"access denied (HTTP {status}): {redact(uri)}: check "
                "MODELPLANE_STORAGE_BEARER_TOKEN or the URL's signature"
            )
        if status is not None:
            what = "not found" if status == 404 else "refused"
            return f"{what} (HTTP {status}): {redact(uri)}"
        return f"not found or unreachable: {redact(uri)}"
    if isinstance(exc, PermissionError):
        return f"permission denied reading {redact(uri)}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    # Never echo credentials or a presigned URL's signature from a library message.
    query = uri.partition("?")[2]
    if query:
        text = text.replace(query, "<redacted>")
    return f"cannot fetch {redact(uri)}: {type(exc).__name__}: {_scrub(text)}"


def _report(message: str, env: dict[str, str]) -> None:
    print(f"modelplane-storage: {message}", file=sys.stderr)
    write_termination_message(message, env.get("MODELPLANE_TERMINATION_LOG"))


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    parser = argparse.ArgumentParser(
        prog="modelplane-storage", description="Copy a model into the model folder."
    )
    parser.add_argument("uri", nargs="?", default=env.get("MODELPLANE_STORAGE_URI", ""))
    parser.add_argument("dest", nargs="?", default=env.get("MODELPLANE_MODEL_DIR", "/mnt/models"))
    parser.add_argument("--sha256", default=env.get("MODELPLANE_STORAGE_SHA256", ""))
    args = parser.parse_args(argv)
    if not args.uri:
        _report("no URI: pass one or set MODELPLANE_STORAGE_URI", env)
        return 1
    try:
        names, found = fetch_model(args.uri, Path(args.dest), args.sha256, env)
        # What was fetched, in the pod's status too (the termination message): the operator
        # records it per revision, so a changed object behind one URI shows.
        write_termination_message(found, env.get("MODELPLANE_TERMINATION_LOG"))
    except Exception as exc:
        _report(_describe(exc, args.uri, env), env)
        return 1
    print(f"modelplane-storage: {redact(args.uri)} -> {args.dest}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
