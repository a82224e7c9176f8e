#!/usr/bin/env python3
"""The demo's real part: the example tiny model served by modelplane's own images on the
real node (node-0), real inference through its Service, and a rollout under load.

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
import tritonclient.http as triton

from clusterkit import Cluster, wait_for
from loadkit import ClosedLoop
from localcluster import LocalCluster
from nodekit import (
    INPUT,
    MODELS_ROOT,
    Images,
    build_model_store,
    cluster_ip,
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
    return 0 if figures["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
