"""Another model server under the same machinery, on simulated GPU nodes: the GPU budget
holds a rollout to the GPUs there are, and a model too big for any node is
InsufficientGPU, exactly as with modelplane's own runtime."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from clusterkit import Cluster
from mdkit import (
    PodWatcher,
    condition,
    events_for,
    get,
    model_deployment,
    set_version,
    wait_condition,
    wait_serving,
)

pytestmark = pytest.mark.usefixtures("operator")

SERVERS: dict[str, dict[str, Any]] = {
    "torchserve": {"server": {"kind": "torchserve"}},
    "custom": {
        "image": "registry.example.com/acme/server:1",
        "port": 9000,
        "server": {"kind": "custom", "readinessPath": "/ready", "command": ["serve"]},
    },
}
COMMANDS = {"torchserve": ["modelplane-torchserve"], "custom": ["serve"]}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_another_server_keeps_the_gpu_budget_and_reports_insufficient_gpu(
    cluster: Cluster, namespace: str, kind: str
) -> None:
    if cluster.local is None:
        pytest.skip("adds a simulated GPU node: needs the local control plane")
    from localcluster import NodeSpec

    product = f"TEST-SRV-{uuid.uuid4().hex[:6].upper()}"
    node = NodeSpec(name=f"gpu-srv-{product.lower()}", gpus=2, gpu_product=product).manifest()
    cluster.local.apply([node])
    name = f"srv-{kind}"
    runtime = {**SERVERS[kind], "gpu": {"count": 1, "product": product}}
    try:
        cluster.apply(model_deployment(name, replicas=2, runtime=runtime), namespace)
        wait_serving(cluster, namespace, name, "1.0.0")
        dep = get(cluster, "deployment", f"{name}-r1", namespace)
        assert dep is not None
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == COMMANDS[kind]  # the chosen server runs
        with PodWatcher(cluster, namespace, name) as watcher:
            set_version(cluster, namespace, name, "2.0.0")
            wait_serving(cluster, namespace, name, "2.0.0", timeout=120)
        assert watcher.max_pods <= 2  # never more pods than the node has GPUs
        assert any(e["reason"] == "GPUConstrained" for e in events_for(cluster, name, namespace))

        big = {**SERVERS[kind], "gpu": {"count": 8}}
        cluster.apply(model_deployment(f"{name}-big", runtime=big), namespace)
        md = wait_condition(
            cluster, f"{name}-big", namespace, "Ready", "False", "InsufficientGPU", timeout=30
        )
        assert "Insufficient nvidia.com/gpu" in condition(md, "Ready")["message"]
        assert condition(md, "Stalled")["status"] == "True"
    finally:
        cluster.kubectl("delete", "md", name, f"{name}-big", "-n", namespace, "--wait=false",
                        check=False)  # fmt: skip
        cluster.kubectl("delete", "node", node["metadata"]["name"], "--wait=false", check=False)
