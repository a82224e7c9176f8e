"""modelplane_oci, ``modelplane package --push`` and the storage initializer against a
real registry (CNCF distribution on 127.0.0.1, TLS, one with htpasswd)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import modelplane_oci as oci
from modelplane_runtime import storage
from modelplane_runtime.cli import main as modelplane_main
from modelplane_runtime.package import load_factory, package_model
from modelplane_runtime.publish import push_model
from registrykit import LocalRegistry, local_registry
from runtimekit import EXAMPLES


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with local_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with local_registry(tmp_path_factory.mktemp("registry-auth"), auth=True) as reg:
        yield reg


def _package(folder: Path, seed: int) -> Path:
    module = load_factory(f"{EXAMPLES}:tiny_mlp")()  # the same weights every time
    with torch.no_grad():
        for param in module.parameters():
            param.add_(seed / 10)  # so each seed is another model
    package_model(module.eval(), {"x": torch.randn(2, 16)}, folder, name="tiny")
    return folder


def _env(reg: LocalRegistry, tmp: Path, user: str = "", password: str = "") -> dict[str, str]:
    env = {"MODELPLANE_REGISTRY_CA": reg.ca_pem, "HOME": str(tmp)}
    if user:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        config = tmp / "config.json"
        config.write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        env["MODELPLANE_REGISTRY_AUTH_FILE"] = str(config)
    return env


def test_push_resolve_pull_and_a_moved_tag(open_registry: LocalRegistry, tmp_path: Path) -> None:
    env = _env(open_registry, tmp_path)
    uri = f"oci://{open_registry.host}/models/tiny:stable"
    v1 = push_model(_package(tmp_path / "v1", 1), uri, env=env)
    again = push_model(tmp_path / "v1", uri, env=env)
    assert again.digest == v1.digest  # the same files, the same image
    v2 = push_model(_package(tmp_path / "v2", 2), uri, env=env)
    assert v2.digest != v1.digest
    ref = oci.parse_oci_uri(uri)
    registry = oci.registry_for(ref, ca_pem=open_registry.ca_pem)
    assert registry.resolve(ref).digest == v2.digest  # the tag moved
    # Pinned by digest, the storage initializer still gets v1's bytes.
    dest = tmp_path / "mnt-v1"
    digest = storage.fetch_oci(f"{uri}@{v1.digest}", dest, env)
    assert digest == v1.digest
    assert (dest / "model.pt2").read_bytes() == (tmp_path / "v1" / "model.pt2").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["metadata.json", "model.pt2"]
    assert storage.fetch_oci(uri, tmp_path / "mnt-v2", env) == v2.digest


def test_missing_tags_and_repositories_are_not_found(
    open_registry: LocalRegistry, tmp_path: Path
) -> None:
    ref = oci.parse_oci_uri(f"oci://{open_registry.host}/models/nothing:v9")
    with pytest.raises(oci.NotFound, match=r"MANIFEST_UNKNOWN|NAME_UNKNOWN|not found"):
        oci.registry_for(ref, ca_pem=open_registry.ca_pem).resolve(ref)
    status = storage.main([ref.uri(), str(tmp_path / "m")])
    assert status == 1


def test_an_untrusted_certificate_is_refused_with_a_reason(open_registry: LocalRegistry) -> None:
    ref = oci.parse_oci_uri(f"oci://{open_registry.host}/models/tiny:stable")
    with pytest.raises(oci.Unreachable, match="TLS verification failed"):
        oci.registry_for(ref).resolve(ref)


def test_a_private_registry_takes_the_right_credentials_only(
    private_registry: LocalRegistry, tmp_path: Path
) -> None:
    uri = f"oci://{private_registry.host}/models/tiny:v1"
    (tmp_path / "good").mkdir()
    good = _env(private_registry, tmp_path / "good", private_registry.username,
                private_registry.password)  # fmt: skip
    pushed = push_model(_package(tmp_path / "v1", 1), uri, env=good)
    assert storage.fetch_oci(uri, tmp_path / "mnt", good) == pushed.digest
    (tmp_path / "bad").mkdir()
    bad = _env(private_registry, tmp_path / "bad", private_registry.username, "wrong")
    with pytest.raises(storage.StorageError, match="refused the credentials"):
        storage.fetch_oci(uri, tmp_path / "mnt-bad", bad)
    ref = oci.parse_oci_uri(uri)
    with pytest.raises(oci.AuthFailed, match="requires credentials"):
        oci.registry_for(ref, ca_pem=private_registry.ca_pem).resolve(ref)
    assert private_registry.password not in json.dumps(bad)  # the wrong one only


def test_package_push_prints_the_digest(
    open_registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("MODELPLANE_REGISTRY_CA_FILE", str(open_registry.ca_file))
    uri = f"oci://{open_registry.host}/models/cli:v1"
    out = tmp_path / "out"
    assert modelplane_main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(out), "--push", uri]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    ref = oci.parse_oci_uri(uri)
    digest = oci.registry_for(ref, ca_pem=open_registry.ca_pem).resolve(ref).digest
    assert printed == f"pushed {uri}@{digest}"
