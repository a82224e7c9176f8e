"""modelplane_oci's pure parts: references, credentials, the model image's layout."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import modelplane_oci as oci
from modelplane_oci.image import image_of, write_layer
from modelplane_oci.registry import _parse_challenge, _words

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "host", "repo", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "", ""),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27", ""),
        ("team/app:v2", "docker.io", "team/app", "v2", ""),
        ("ghcr.io/a/b:1.0.0", "ghcr.io", "a/b", "1.0.0", ""),
        ("198.18.0.10:5000/models/tiny:v1", "198.18.0.10:5000", "models/tiny", "v1", ""),
        (f"h:5000/m@{DIGEST}", "h:5000", "m", "", DIGEST),
        (f"h.io/m:t@{DIGEST}", "h.io", "m", "t", DIGEST),
        ("localhost/modelplane/runtime:abc", "localhost", "modelplane/runtime", "abc", ""),
    ],
)
def test_references_parse_as_the_kubelet_reads_them(
    text: str, host: str, repo: str, tag: str, digest: str
) -> None:
    ref = oci.parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repo, tag, digest)
    assert ref.version == (digest or tag or "latest")


@pytest.mark.parametrize(
    "text",
    ["", "UPPER/case", "h.io/m@sha256:short", "h.io/m:bad tag", "h.io/m:-lead", "h.io//m"],
)
def test_bad_references_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(oci.ReferenceError):
        oci.parse_reference(text)


def test_an_oci_uri_names_its_registry() -> None:
    ref = oci.parse_oci_uri("oci://registry.example.com/models/resnet:1")
    assert ref.uri() == "oci://registry.example.com/models/resnet:1"
    with pytest.raises(oci.ReferenceError, match="names its registry"):
        oci.parse_oci_uri("oci://models/resnet:1")
    assert oci.parse_reference("docker.io/x/y").api_host == "registry-1.docker.io"


@given(
    host=st.sampled_from(["h.io", "r.example.com:5000", "198.18.0.10:5001"]),
    repo=st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True),
    tag=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
def test_a_reference_reads_back_as_written(host: str, repo: str, tag: str) -> None:
    text = f"{host}/{repo}:{tag}"
    ref = oci.parse_reference(text)
    assert str(ref) == text
    assert str(oci.parse_reference(str(ref.pinned(DIGEST)))) == f"{text}@{DIGEST}"


def test_credentials_are_found_under_every_spelling_of_the_host() -> None:
    auth = base64.b64encode(b"u:p@ss:word").decode()
    for key in ("h.io:5000", "https://h.io:5000", "https://h.io:5000/v1/"):
        creds = oci.credentials_from_docker_config({"auths": {key: {"auth": auth}}}, "h.io:5000")
        assert creds is not None and (creds.username, creds.password) == ("u", "p@ss:word")
    assert (
        oci.credentials_from_docker_config({"auths": {"other.io": {"auth": auth}}}, "h.io") is None
    )
    hub = {"auths": {"https://index.docker.io/v1/": {"username": "a", "password": "b"}}}
    assert oci.credentials_from_docker_config(hub, "docker.io") == oci.Credentials("a", "b")
    assert "p@ss" not in repr(
        oci.credentials_from_docker_config({"auths": {"h": {"auth": auth}}}, "h")
    )


def test_challenges_and_registry_errors_are_read() -> None:
    scheme, params = _parse_challenge(
        'Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.io/token", "service": "registry.io",
                      "scope": "repository:a/b:pull"}  # fmt: skip
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    assert _words(body.encode()) == "MANIFEST_UNKNOWN: manifest unknown"


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.pt2").write_bytes(b"\x00program" * 100)
    (folder / "metadata.json").write_text('{"name": "tiny"}')
    (folder / "sub" / "extra.txt").write_text("x")
    (folder / ".scratch").write_text("left out")
    return folder


def test_the_model_layer_holds_the_files_at_the_root_and_is_reproducible(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    layer = write_layer(folder, tmp_path / "layer.tar.gz")
    zipped = layer.path.read_bytes()
    raw = gzip.decompress(zipped)
    assert layer.digest == "sha256:" + hashlib.sha256(zipped).hexdigest()
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.size == len(zipped)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("model.pt2").read() == b"\x00program" * 100  # type: ignore[union-attr]
    assert sorted(members) == ["metadata.json", "model.pt2", "sub", "sub/extra.txt"]
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
    (folder / "model.pt2").touch()  # a new mtime: the same content, the same digest
    assert write_layer(folder, tmp_path / "again.tar.gz").digest == layer.digest
    config, image_layer, manifest = image_of(folder, {"org.opencontainers.image.title": "tiny"},
                                             tmp_path)  # fmt: skip
    doc = json.loads(manifest)
    assert doc["layers"][0]["digest"] == image_layer.digest == layer.digest
    assert json.loads(config)["rootfs"]["diff_ids"] == [layer.diff_id]
    (folder / "model.pt2").write_bytes(b"other")
    assert write_layer(folder, tmp_path / "changed.tar.gz").digest != layer.digest
