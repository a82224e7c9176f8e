"""The image store's pruning, against a real registry (CNCF distribution) on 127.0.0.1:
older tags of modelplane's images go, the kept tag still serves, and a garbage
collection with no writer up frees the dropped layers."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from localcluster import imagestore
from localcluster.paths import BIN_DIR
from localcluster.processes import free_port
from modelplane_oci import Registry, parse_reference
from modelplane_oci.image import push_folder


def _status(url: str, method: str = "GET") -> int:
    # distribution answers 404 for an OCI manifest a client does not accept
    request = urllib.request.Request(
        url, method=method, headers={"Accept": imagestore.MANIFEST_TYPES}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextmanager
def _serving(binary: Path, config: Path, address: str) -> Iterator[None]:
    proc = subprocess.Popen([str(binary), "serve", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not imagestore.answers(address):
            assert proc.poll() is None and time.monotonic() < deadline, "the registry did not start"
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_prune_keeps_one_tag_per_image_and_gc_frees_the_rest(tmp_path: Path) -> None:
    binary = BIN_DIR / "registry"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run hack/build-tools.sh")
    address = f"127.0.0.1:{free_port()}"
    config = imagestore.write_config(tmp_path / "c.yml", address, False, tmp_path / "store")
    with _serving(binary, config, address):
        registry = Registry(address, insecure=True)
        layers = {}
        for tag in ("old", "new"):
            folder = tmp_path / tag
            folder.mkdir()
            (folder / "payload").write_text(f"the {tag} image's bytes")
            ref = parse_reference(f"{address}/modelplane/runtime:{tag}")
            pushed = push_folder(registry, ref, folder, {}, tmp_path)
            layers[tag] = registry.manifest(pushed.reference)[1]["layers"][0]["digest"]
        # Another repository's tags are not modelplane's images: they stay.
        other = tmp_path / "other"
        other.mkdir()
        (other / "payload").write_text("x")
        push_folder(registry, parse_reference(f"{address}/models/tiny:old"), other, {}, tmp_path)

        dropped = imagestore.prune(address, {"runtime": "new", "operator": "never-pushed"})
        assert dropped == ["modelplane/runtime:old"]
        base = f"http://{address}/v2"
        assert _status(f"{base}/modelplane/runtime/manifests/old", "HEAD") == 404
        assert _status(f"{base}/modelplane/runtime/manifests/new", "HEAD") == 200
        assert _status(f"{base}/models/tiny/manifests/old", "HEAD") == 200
        assert _status(f"{base}/modelplane/runtime/blobs/{layers['old']}", "HEAD") == 200
    subprocess.run(
        [str(binary), "garbage-collect", "--delete-untagged", str(config)],
        check=True, capture_output=True,
    )  # fmt: skip
    with _serving(binary, config, address):  # no writer was up while it collected
        base = f"http://{address}/v2/modelplane/runtime/blobs"
        assert _status(f"{base}/{layers['old']}", "HEAD") == 404
        assert _status(f"{base}/{layers['new']}", "HEAD") == 200
