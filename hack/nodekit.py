"""What the real-node tests share: models served over HTTP from this machine, the
ModelDeployments that run them on node-0, and clients that send real inference.

Every address used here is node-0's (198.18.0.0/15, this machine only) or 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import shutil
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clusterkit import Cluster, wait_for
from localcluster.addresses import NODE_IP
from localcluster.node import REAL_NODE_LABEL, STATE_ROOT, image_refs
from modelplane_runtime.mar import write_mar
from modelplane_runtime.package import load_factory, package_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "models" / "mlp.py"
# World-readable: the storage initializer (uid 1000) reads it through a hostPath PV.
MODELS_ROOT = STATE_ROOT / "test-models"
INPUT = np.linspace(-1.0, 1.0, 16 * 3, dtype=np.float32).reshape(3, 16)


@dataclass(frozen=True)
class Images:
    runtime: str
    storage: str
    operator: str
    torchserve: str

    @classmethod
    def built(cls) -> Images:
        refs = image_refs()
        return cls(
            runtime=refs["MODELPLANE_RUNTIME_IMAGE"],
            storage=refs["MODELPLANE_STORAGE_IMAGE"],
            operator=refs["MODELPLANE_OPERATOR_IMAGE"],
            torchserve=refs.get("MODELPLANE_TORCHSERVE_IMAGE", ""),
        )


@dataclass(frozen=True)
class ModelStore:
    """Packaged tiny MLPs (v1, v2 and broken ones) as tarballs and TorchServe archives,
    served over HTTP on node-0's address and kept in MODELS_ROOT for file/PVC URIs."""

    root: Path
    url: str
    expected: dict[str, np.ndarray]  # version -> the in-process output for INPUT

    def uri(self, version: str) -> str:
        return f"{self.url}/tiny-{version}.tar.gz"

    def mar_uri(self, version: str) -> str:
        """A `.mar` (v1, v2, or broken: its program cut short) for TorchServe."""
        return f"{self.url}/tiny-{version}.mar"


def _tiny(seed: int) -> torch.nn.Module:
    """The example's tiny MLP with weights of its own: the factory seeds itself, so each
    version's weights are moved by noise from ``seed`` (v1 and v2 answer differently)."""
    module: torch.nn.Module = load_factory(f"{EXAMPLES}:tiny_mlp")()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return module.eval()


def _tarball(folder: Path, path: Path) -> None:
    with tarfile.open(path, "w:gz") as bundle:
        bundle.add(folder, arcname="tiny")


def _mars(work: Path) -> None:
    """tiny-v1.mar and tiny-v2.mar (`modelplane package --format mar`'s archive of each
    version's folder), and tiny-broken.mar: v2's with its program cut short."""
    for version in ("v1", "v2"):
        archive = write_mar(work / version, work / f"mar-{version}", "tiny", version)
        shutil.copy(archive, MODELS_ROOT / f"tiny-{version}.mar")
    with (
        zipfile.ZipFile(MODELS_ROOT / "tiny-v2.mar") as good,
        zipfile.ZipFile(MODELS_ROOT / "tiny-broken.mar", "w") as broken,
    ):
        for item in good.infolist():
            data = good.read(item)
            broken.writestr(item, data[:1000] if item.filename.endswith(".pt2") else data)


def build_model_store(work: Path) -> dict[str, np.ndarray]:
    """v1 and v2 (other weights), 'foreign' (metadata names another torch), and the
    TorchServe archives of v1, v2 and a broken one."""
    if MODELS_ROOT.exists():
        shutil.rmtree(MODELS_ROOT)
    MODELS_ROOT.mkdir(parents=True)
    MODELS_ROOT.chmod(0o755)
    expected = {}
    for version, seed in (("v1", 1), ("v2", 2)):
        module = _tiny(seed)
        folder = work / version
        package_model(module, {"x": torch.randn(2, 16)}, folder, name="tiny", max_batch_size=64)
        with torch.no_grad():
            expected[version] = module(torch.from_numpy(INPUT)).numpy()
        _tarball(folder, MODELS_ROOT / f"tiny-{version}.tar.gz")
        shutil.copytree(folder, MODELS_ROOT / f"tiny-{version}")
    assert not np.allclose(expected["v1"], expected["v2"]), "v1 and v2 must tell apart"
    foreign = work / "foreign"
    shutil.copytree(work / "v1", foreign)
    meta = json.loads((foreign / "metadata.json").read_text())
    (foreign / "metadata.json").write_text(json.dumps({**meta, "torch_version": "1.13.1"}))
    _tarball(foreign, MODELS_ROOT / "tiny-foreign.tar.gz")
    _mars(work)
    for path in MODELS_ROOT.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return expected


def serve_models(root: Path) -> Iterator[str]:
    """An HTTP server for ``root`` on node-0's address (reachable from its pods)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((NODE_IP, 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{NODE_IP}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


NODE_PLACEMENT = {
    "nodeSelector": {REAL_NODE_LABEL: "true"},
    "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}


def node_md(
    name: str, images: Images, uri: str, version: str, replicas: int = 1, **spec: Any
) -> dict[str, Any]:
    """A CPU ModelDeployment of the tiny model, pinned to node-0, with the built images."""
    body: dict[str, Any] = {
        "model": {"name": "tiny", "version": version, "uri": uri},
        "runtime": {
            "image": images.runtime,
            "storageInitializerImage": images.storage,
            "gpu": {"count": 0},
            "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}},
            "batching": {"enabled": False},
        },
        "replicas": replicas,
        "pod": dict(NODE_PLACEMENT),
    }
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in md.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return {}


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        md = cluster.get_json("md", name, "-n", namespace)
        ok = condition(md, "Ready").get("status") == "True"
        current = md.get("status", {}).get("observedGeneration") == md["metadata"]["generation"]
        return md if ok and current else None

    result: dict[str, Any] = wait_for(ready, f"md/{name} Ready", timeout=timeout, interval=1)
    return result


def cluster_ip(cluster: Cluster, namespace: str, name: str, path: str = "/v2/health/live") -> str:
    """The Service's address, once kube-proxy routes it to a ready pod (``path`` answers:
    modelplane's live path by default, another server's own otherwise).

    Ready pods reach the EndpointSlice at once, but kube-proxy programs iptables
    asynchronously (its sync period): until then the address refuses connections.
    """
    import httpx

    ip: str = cluster.get_json("service", name, "-n", namespace)["spec"]["clusterIP"]

    def answers() -> bool:
        try:
            return httpx.get(f"http://{ip}:80{path}", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, f"kube-proxy to route {ip}", timeout=30, interval=0.2)
    return ip


# One JSON inference request of INPUT.
INFER_BODY = {
    "inputs": [
        {
            "name": "x",
            "shape": list(INPUT.shape),
            "datatype": "FP32",
            "data": INPUT.ravel().tolist(),
        }
    ]
}


def infer_json(base_url: str, timeout: float = 10) -> tuple[str, np.ndarray]:
    """One JSON inference of INPUT: (model_version, output)."""
    import httpx

    response = httpx.post(f"{base_url}/v2/models/tiny/infer", json=INFER_BODY, timeout=timeout)
    response.raise_for_status()
    out = response.json()
    tensor = out["outputs"][0]
    data = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
    return str(out["model_version"]), data


def pods(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
    items: list[dict[str, Any]] = cluster.get_json(*args)["items"]
    return items


def wait_gone(cluster: Cluster, namespace: str, selector: str, timeout: float = 60) -> None:
    wait_for(
        lambda: not pods(cluster, namespace, selector), f"pods {selector} gone", timeout=timeout
    )


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
