"""GPUs in every mode clusters hand them out, against the real scheduler and controllers.

Each case adds simulated nodes of its own (a product no other test uses), so the
capacity it counts is its own: whole GPUs as extended resources, DRA device claims
(gpu.nvidia.com), DRA MIG devices (mig.nvidia.com), mixed-strategy MIG extended
resources, and time-sliced shared GPUs. kube-scheduler does every allocation (claims
from ResourceSlices); kwok only runs the pods.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from mdkit import (
    PodWatcher,
    events_for,
    model_deployment,
    set_version,
    wait_condition,
    wait_serving,
)


@dataclass(frozen=True)
class Mode:
    name: str
    runtime: Callable[[str], dict[str, Any]]  # product -> spec.runtime
    node: Callable[[str, str], Any]  # (node name, product) -> NodeSpec with 2 units
    scheduler_words: str  # what the scheduler says when it cannot place a pod
    claims: bool  # whether pods hold ResourceClaims

    def __str__(self) -> str:
        return self.name


def _node_spec(**fields: Any) -> Any:
    from localcluster import NodeSpec

    return NodeSpec(**fields)


MODES = [
    Mode(
        "extended",
        lambda product: {"gpu": {"count": 1, "product": product}},
        lambda name, product: _node_spec(name=name, gpus=2, gpu_product=product),
        "Insufficient nvidia.com/gpu",
        claims=False,
    ),
    Mode(
        "device-claim",
        lambda product: {"gpuClaim": {"product": product.replace("-", " ")}},
        lambda name, product: _node_spec(
            name=name, dra_gpus=2, dra_product=product.replace("-", " ")
        ),
        "cannot allocate all claims",
        claims=True,
    ),
    Mode(
        "mig-claim",
        lambda product: {"gpuClaim": {"migProfile": "1g.10gb", "product": product}},
        lambda name, product: _node_spec(name=name, dra_mig={"1g.10gb": 2}, dra_product=product),
        "cannot allocate all claims",
        claims=True,
    ),
    Mode(
        "mig-extended",
        lambda product: {
            "gpu": {"count": 1, "resource": "nvidia.com/mig-1g.10gb", "product": product}
        },
        lambda name, product: _node_spec(name=name, mig={"1g.10gb": 2}, gpu_product=product),
        "Insufficient nvidia.com/mig-1g.10gb",
        claims=False,
    ),
    Mode(
        "shared",
        lambda product: {
            "gpu": {"count": 1, "resource": "nvidia.com/gpu.shared", "product": product}
        },
        lambda name, product: _node_spec(name=name, gpus=1, shared_replicas=2, gpu_product=product),
        "Insufficient nvidia.com/gpu.shared",
        claims=False,
    ),
]


@pytest.fixture
def gpu_nodes(cluster: Cluster) -> Iterator[Callable[[Any], str]]:
    """Adds simulated nodes (and their ResourceSlices); removes them afterwards."""
    if cluster.local is None:
        pytest.skip("adds simulated GPU nodes: needs the local control plane")
    local = cluster.local
    added: list[Any] = []

    def add(spec: Any) -> str:
        added.append(spec)
        local.apply([spec.manifest()])
        slices = spec.resource_slices()
        if slices:
            local.apply(slices)
        return str(spec.name)

    yield add
    for spec in added:
        for s in spec.resource_slices():
            cluster.kubectl("delete", "resourceslice", s["metadata"]["name"], check=False)
        cluster.kubectl("delete", "node", spec.name, "--wait=false", check=False)


def serving_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get_json("pods", "-n", namespace, "-l", f"modelplane.io/deployment={name}")
    return [p for p in items["items"] if not p["metadata"].get("deletionTimestamp")]


def claims_in(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.get_json("resourceclaims", "-n", namespace)["items"])


def allocated_devices(claims: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (r["pool"], r["device"])
        for c in claims
        for r in ((c.get("status") or {}).get("allocation") or {})
        .get("devices", {})
        .get("results", [])
    ]


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_each_gpu_mode_serves_rolls_waits_for_capacity_and_frees_its_gpus(
    cluster: Cluster, namespace: str, operator: Any, gpu_nodes: Callable[[Any], str], mode: Mode
) -> None:
    product = f"TEST-{mode.name.upper()}-{uuid.uuid4().hex[:6].upper()}"
    node = gpu_nodes(mode.node(f"{mode.name}-{product.lower()}"[:60], product))
    name = f"gpus-{mode.name}"
    cluster.apply(model_deployment(name, replicas=2, runtime=mode.runtime(product)), namespace)

    # Ready on the right node, with what it asked for allocated and said in status.
    md = wait_serving(cluster, namespace, name, "1.0.0", timeout=90)
    pods = serving_pods(cluster, namespace, name)
    assert {p["spec"]["nodeName"] for p in pods} == {node}
    assert md["status"]["gpus"] == 2
    allocation = md["status"]["gpuAllocation"]
    assert allocation["allocated"] == 2
    if mode.claims:
        assert allocation["mode"] == "DeviceClaim"
        dra_product = product.replace("-", " ") if mode.name == "device-claim" else product
        assert allocation["products"] == [dra_product]
        held = allocated_devices(claims_in(cluster, namespace))
        assert len(held) == len(set(held)) == 2 and {pool for pool, _ in held} == {node}
        templates = cluster.get_json("resourceclaimtemplates", "-n", namespace)["items"]
        assert [t["metadata"]["name"] for t in templates] == [f"{name}-r1-gpu"]
    else:
        assert allocation == {"mode": "ExtendedResource", "resource": allocation["resource"],
                              "allocated": 2, "products": [product]}  # fmt: skip

    # A rolling update on the full node: one pod at a time, never a third GPU.
    with PodWatcher(cluster, namespace, name) as watcher:
        set_version(cluster, namespace, name, "2.0.0")
        wait_serving(cluster, namespace, name, "2.0.0", timeout=120)
    assert watcher.max_pods <= 2
    assert any(e["reason"] == "GPUConstrained" for e in events_for(cluster, name, namespace))
    if mode.claims:
        templates = cluster.get_json("resourceclaimtemplates", "-n", namespace)["items"]
        assert f"{name}-r2-gpu" in {t["metadata"]["name"] for t in templates}

    # Over-asking: the scheduler's own words in status, until a node brings capacity.
    cluster.kubectl("scale", "md", name, "-n", namespace, "--replicas=3")
    md = wait_condition(cluster, name, namespace, "Ready", "False", "InsufficientGPU", 60)
    message = next(c for c in md["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert mode.scheduler_words in message
    gpu_nodes(mode.node(f"{mode.name}-more-{product.lower()}"[:60], product))
    wait_condition(cluster, name, namespace, "Ready", status="True", timeout=90)

    # Deleting the ModelDeployment frees its GPUs: no claim of it is left.
    cluster.kubectl("delete", "md", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: not serving_pods(cluster, namespace, name), "the pods to go", timeout=60)
    if mode.claims:
        wait_for(lambda: not claims_in(cluster, namespace), "the claims to be freed", timeout=60)


def test_extended_resource_pods_and_claims_share_dra_devices_without_double_allocation(
    cluster: Cluster, namespace: str, operator: Any, gpu_nodes: Callable[[Any], str]
) -> None:
    product = f"TEST MAPPED {uuid.uuid4().hex[:6].upper()}"
    spec = _node_spec(name=f"mapped-{uuid.uuid4().hex[:6]}", dra_gpus=2, dra_product=product)
    node = gpu_nodes(spec)
    # nvidia.com/gpu on a node without a device plugin: gpu.nvidia.com maps it to DRA.
    plain = {"gpu": {"count": 1}}
    on_node = {"nodeSelector": {"kubernetes.io/hostname": node}}
    cluster.apply(model_deployment("plain", runtime=plain, pod=on_node), namespace)
    claimed = {"gpuClaim": {"product": product}}
    cluster.apply(model_deployment("claimed", runtime=claimed), namespace)
    wait_serving(cluster, namespace, "plain", "1.0.0", timeout=90)
    wait_serving(cluster, namespace, "claimed", "1.0.0", timeout=90)

    (pod,) = serving_pods(cluster, namespace, "plain")
    special = pod["status"]["extendedResourceClaimStatus"]["resourceClaimName"]
    claims = claims_in(cluster, namespace)
    assert special in {c["metadata"]["name"] for c in claims}
    held = allocated_devices(claims)
    assert len(held) == len(set(held)) == 2  # two pods, two different devices of the node
    assert {pool for pool, _ in held} == {node}

    # The node is full now, whichever way a pod asks.
    cluster.apply(model_deployment("third", runtime=claimed), namespace)
    md = wait_condition(cluster, "third", namespace, "Ready", "False", "InsufficientGPU", 60)
    assert "cannot allocate all claims" in str(md["status"]["conditions"])


def test_a_selector_the_api_server_cannot_compile_is_reported_and_nothing_is_half_made(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    broken = {"gpuClaim": {"selectors": ["device.attributes['gpu.nvidia.com'].productName =="]}}
    cluster.apply(model_deployment("broken-cel", runtime=broken), namespace)
    md = wait_condition(cluster, "broken-cel", namespace, "Ready", "False", "InvalidSpec", 60)
    message = next(c for c in md["status"]["conditions"] if c["type"] == "Ready")["message"]
    assert "the API server refused" in message and "selectors" in message, message
    for kind in ("deployments", "services", "resourceclaimtemplates"):
        assert cluster.get_json(kind, "-n", namespace)["items"] == [], kind
