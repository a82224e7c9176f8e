#!/usr/bin/env python3
"""The demo's real part: the example tiny model served by modelplane's own images on the
real node (node-0), real inference through its Service, a rollout under load, and the
model as a TorchServe archive served by TorchServe, and the model as an OCI image in the
cluster's registry, pinned by digest per revision.

Run by hack/demo.sh after the simulated part, against the demo cluster, while the demo's
operator runs. The model files are served over HTTP from this process on node-0's
address, so the ModelDeployment is left running but its pods cannot restart after the
demo ends (delete it with `kubectl delete ns demo-node`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import tritonclient.http as triton
from kubernetes import client

from clusterkit import Cluster, wait_for
from loadkit import ClosedLoop
from localcluster import LocalCluster
from localcluster.registries import registries
from modelplane_operator import plugin
from modelplane_runtime.package import load_factory, package_model
from modelplane_runtime.publish import push_model
from nodekit import (
    EXAMPLES,
    INPUT,
    MODELS_ROOT,
    Images,
    build_model_store,
    cluster_ip,
    infer_json,
    node_md,
    pods,
    serve_models,
    wait_ready,
)

NS = "demo-node"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    local = LocalCluster("modelplane")
    if not local.real_node:
        print("this machine runs no real node (root, make images): skipping the real part")
        return 0
    cluster = Cluster.for_local(local)
    images = Images.built()
    with tempfile.TemporaryDirectory() as work:
        expected = build_model_store(Path(work))
        for url in serve_models(MODELS_ROOT):
            return demo(cluster, images, url, expected)
    return 1


def demo(cluster: Cluster, images: Images, url: str, expected: dict[str, np.ndarray]) -> int:
    step(f"Real node: the tiny MLP (v1) on node-0 from {images.runtime}")
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.kubectl(
        "label", "namespace", NS, "--overwrite", "pod-security.kubernetes.io/enforce=restricted"
    )
    cluster.apply(node_md("tiny", images, f"{url}/tiny-v1.tar.gz", "v1", replicas=2), namespace=NS)
    started = time.monotonic()
    wait_ready(cluster, NS, "tiny", timeout=300)
    seconds = time.monotonic() - started
    print(f"Ready after {seconds:.0f} s (storage initializer, model load, the kubelet's probe)")
    print(cluster.kubectl("get", "md,pods", "-n", NS, "-o", "wide").stdout)

    step("Real inference through the Service's ClusterIP (kube-proxy), with tritonclient")
    ip = cluster_ip(cluster, NS, "tiny")
    client = triton.InferenceServerClient(f"{ip}:80")
    x = triton.InferInput("x", list(INPUT.shape), "FP32")
    x.set_data_from_numpy(INPUT)
    result = client.infer("tiny", [x])
    out = result.as_numpy("output0")
    version = result.get_response()["model_version"]
    print(f"POST http://{ip}/v2/models/tiny/infer -> model_version {version}")
    print(out)
    print(
        "matches the model run in-process:",
        bool(np.allclose(out, expected["v1"], rtol=1e-5, atol=1e-6)),
    )

    step("Rolling update to v2 under 4 closed-loop clients through the Service")
    with ClosedLoop(f"http://{ip}:80", clients=4, max_seconds=240) as load:
        time.sleep(2)
        cluster.apply(
            node_md("tiny", images, f"{url}/tiny-v2.tar.gz", "v2", replicas=2), namespace=NS
        )

        def done() -> bool:
            left = pods(cluster, NS, "modelplane.io/deployment=tiny")
            md = cluster.get_json("md", "tiny", "-n", NS)
            versions = {p["metadata"]["labels"].get("app.kubernetes.io/version") for p in left}
            return md["status"].get("currentVersion") == "v2" and versions == {"v2"}

        wait_for(done, "the rollout to v2", timeout=240, interval=1)
        time.sleep(2)
    figures = load.figures()
    print(
        f"{figures['requests']} requests, {figures['failures']} failed, "
        f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"answers by version {figures['versions']}"
    )
    if figures["failures"]:
        return 1
    return torchserve_demo(cluster, images, url, expected) or oci_demo(cluster, images)


def torchserve_demo(
    cluster: Cluster, images: Images, url: str, expected: dict[str, np.ndarray]
) -> int:
    """The same model as a TorchServe archive, served by TorchServe under the operator."""
    step(f"Another server: TorchServe ({images.torchserve}) with tiny-v1.mar")
    print("modelplane package ... --format mar made the archive (model.pt2 + v2 JSON handler)")
    md = node_md("tiny-ts", images, f"{url}/tiny-v1.mar", "v1")
    runtime = md["spec"]["runtime"]
    runtime.pop("batching")
    runtime.update(image=images.torchserve, server={"kind": "torchserve"})
    runtime["resources"] = {"requests": {"cpu": "100m", "memory": "768Mi"}}
    cluster.apply(md, namespace=NS)
    wait_ready(cluster, NS, "tiny-ts", timeout=300)
    ip = cluster_ip(cluster, NS, "tiny-ts", path="/ping")
    version, out = infer_json(f"http://{ip}:80", timeout=60)
    print(f"POST http://{ip}/v2/models/tiny/infer (TorchServe) -> model_version {version}")
    same = bool(np.allclose(out, expected["v1"], rtol=1e-5, atol=1e-5))
    print("matches the model run in-process:", same)
    cluster.kubectl("delete", "md", "tiny-ts", "-n", NS, "--wait=false")
    return 0 if same else 1


def oci_demo(cluster: Cluster, images: Images) -> int:
    """The model as an OCI image in the cluster's registry, pinned by digest per revision."""
    assert cluster.local is not None
    found = registries(cluster.local)
    if "registry" not in found:
        print("the cluster has no registry: skipping the OCI part")
        return 0
    reg = found["registry"]
    env = {"MODELPLANE_REGISTRY_CA_FILE": str(reg.ca_file), "HOME": tempfile.gettempdir()}
    uri = f"oci://{reg.host}/demo/tiny:prod"
    step(f"Models as OCI images: modelplane package --push {uri}, then a pinned rollout")
    first = push_model(MODELS_ROOT / "tiny-v1", uri, env=env)
    print(f"pushed {first.uri()}")
    cluster.apply(node_md("oci-tiny", images, uri, "v1"), namespace=NS)
    wait_ready(cluster, NS, "oci-tiny", timeout=300)
    # Another model under the same tag: the tiny MLP with other weights.
    module = load_factory(f"{EXAMPLES}:tiny_mlp")().eval()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.3)
    other = Path(tempfile.mkdtemp()) / "tiny"
    package_model(module, {"x": torch.randn(2, 16)}, other, name="tiny", max_batch_size=64)
    second = push_model(other, uri, env=env)
    print(f"the tag moved: {first.digest} -> {second.digest}")
    time.sleep(5)
    template = cluster.get_json("deployment", "oci-tiny-r1", "-n", NS)["spec"]["template"]
    print("revision 1 still serves:", template["spec"]["initContainers"][0]["args"][0])
    step("A new revision resolves the tag again; going back serves revision 1's digest")
    cluster.apply(node_md("oci-tiny", images, uri, "v2"), namespace=NS)
    wait_ready(cluster, NS, "oci-tiny", timeout=300)
    cluster.apply(node_md("oci-tiny", images, uri, "v1"), namespace=NS)
    wait_ready(cluster, NS, "oci-tiny", timeout=300)
    api = client.CustomObjectsApi(cluster.api_client())
    print(plugin.status(api, NS, "oci-tiny"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
