"""The GPU budget in every mode, over simulated clusters: DRA devices (class and
selectors in CEL, claims that hold devices), MIG and shared extended resources, and
extended resources that a DeviceClass maps to DRA devices."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from localcluster import DEVICE_CLASSES, NodeSpec
from modelplane_operator.cel import device_activation, matches
from modelplane_operator.devices import free_claim_slots, mapped_slots, slice_devices
from modelplane_operator.gpu import free_slots
from modelplane_operator.spec import GpuClaim

CLASSES = list(DEVICE_CLASSES)


def ready(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return manifest


def cluster(*specs: NodeSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [ready(s.manifest()) for s in specs], [x for s in specs for x in s.resource_slices()]


def claim(devices: list[tuple[str, str]], allocated: bool = True, cls: str = "gpu.nvidia.com"):
    """A ResourceClaim holding (node, device) pairs of gpu.nvidia.com (or waiting)."""
    body: dict[str, Any] = {
        "metadata": {"name": "c"},
        "spec": {
            "devices": {
                "requests": [
                    {"name": "gpu", "exactly": {"deviceClassName": cls, "count": len(devices)}}
                ]
            }
        },
        "status": {},
    }
    if allocated:
        results = [
            {"request": "gpu", "driver": "gpu.nvidia.com", "pool": node, "device": d}
            for node, d in devices
        ]
        body["status"] = {"allocation": {"devices": {"results": results}}}
    return body


def test_free_devices_are_those_of_the_class_minus_allocated_ones() -> None:
    nodes, slices = cluster(NodeSpec(name="a", dra_gpus=4), NodeSpec(name="b", dra_gpus=2))
    assert free_claim_slots(nodes, slices, CLASSES, [], GpuClaim(count=1)) == 6
    assert free_claim_slots(nodes, slices, CLASSES, [], GpuClaim(count=2)) == 2 + 1
    # One claim from a node's devices: 3 free on a, 2 on b -> one 2-GPU pod each.
    held = [claim([("a", "gpu-0")])]
    assert free_claim_slots(nodes, slices, CLASSES, held, GpuClaim(count=2)) == 1 + 1
    assert free_claim_slots(nodes, slices, CLASSES, held, GpuClaim(count=3)) == 1


def test_a_waiting_claim_holds_what_it_will_take() -> None:
    nodes, slices = cluster(NodeSpec(name="a", dra_gpus=4))
    waiting = [claim([("a", "x"), ("a", "y")], allocated=False)]
    assert free_claim_slots(nodes, slices, CLASSES, waiting, GpuClaim(count=1)) == 4 - 2
    other_class = [claim([("a", "x")], allocated=False, cls="mig.nvidia.com")]
    assert free_claim_slots(nodes, slices, CLASSES, other_class, GpuClaim(count=1)) == 4


def test_selectors_product_memory_and_mig_profile_choose_devices() -> None:
    nodes, slices = cluster(
        NodeSpec(name="h100", dra_gpus=2),
        NodeSpec(
            name="a100",
            dra_gpus=1,
            dra_mig={"1g.10gb": 7},
            dra_product="NVIDIA A100-SXM4-80GB",
            dra_architecture="Ampere",
            dra_memory="40Gi",
        ),
    )

    def slots(**fields: Any) -> int:
        return free_claim_slots(nodes, slices, CLASSES, [], GpuClaim(**fields))

    assert slots() == 3  # the gpu class: whole GPUs only, never MIG devices
    assert slots(product="NVIDIA H100 80GB HBM3") == 2
    assert slots(min_memory="41Gi") == 2 and slots(min_memory="40Gi") == 3
    assert slots(device_class="mig.nvidia.com", mig_profile="1g.10gb") == 7
    assert slots(device_class="mig.nvidia.com", mig_profile="3g.40gb") == 0
    hopper = "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"
    assert slots(selectors=(hopper,)) == 2
    newer = "device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('570.0.0'))"
    assert slots(selectors=(newer,)) == 3
    assert slots(selectors=("device.attributes['gpu.nvidia.com'].nosuch == 1",)) == 0
    assert slots(selectors=("this is not CEL (",)) == 0  # fails closed
    assert slots(device_class="no-such-class") == 0


def test_unready_nodes_and_the_node_selector_leave_their_devices_out() -> None:
    nodes, slices = cluster(NodeSpec(name="a", dra_gpus=2), NodeSpec(name="b", dra_gpus=2))
    nodes[1]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert free_claim_slots(nodes, slices, CLASSES, [], GpuClaim()) == 2
    zone = {"topology.kubernetes.io/zone": "z1"}
    assert free_claim_slots(nodes, slices, CLASSES, [], GpuClaim(), zone) == 0


def test_mig_and_shared_extended_resources_count_like_gpus() -> None:
    mig = ready(NodeSpec(name="m", mig={"1g.10gb": 7}).manifest())
    shared = ready(NodeSpec(name="s", gpus=2, shared_replicas=4).manifest())
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": "m",
            "containers": [{"resources": {"limits": {"nvidia.com/mig-1g.10gb": "2"}}}],
        },
        "status": {"phase": "Running"},
    }
    nodes = [mig, shared]
    assert free_slots(nodes, [pod], 1, resource="nvidia.com/mig-1g.10gb") == 5
    assert free_slots(nodes, [pod], 1, resource="nvidia.com/gpu.shared") == 8
    assert free_slots(nodes, [pod], 1) == 0  # neither node has whole nvidia.com/gpu


def test_an_extended_resource_mapped_to_a_device_class_is_served_from_dra_nodes() -> None:
    nodes, slices = cluster(NodeSpec(name="plugin", gpus=4), NodeSpec(name="dra", dra_gpus=4))
    # The device plugin's node keeps its own path: only the DRA node's devices count here.
    assert mapped_slots(nodes, slices, CLASSES, [], "nvidia.com/gpu", 1) == 4
    held = [claim([("dra", "gpu-1"), ("dra", "gpu-2")])]  # a pod's special claim, say
    assert mapped_slots(nodes, slices, CLASSES, held, "nvidia.com/gpu", 1) == 2
    assert mapped_slots(nodes, slices, CLASSES, [], "nvidia.com/gpu.shared", 1) == 0


def test_cel_values_are_typed_as_the_scheduler_types_them() -> None:
    (device,) = [d for d in slice_devices(NodeSpec(name="a", dra_gpus=1).resource_slices())]
    act = device_activation(device.driver, device.raw)
    assert matches("device.driver == 'gpu.nvidia.com'", act)
    memory = "device.capacity['gpu.nvidia.com'].memory"
    assert matches(f"{memory}.compareTo(quantity('80Gi')) == 0", act)
    assert matches(f"{memory}.isGreaterThan(quantity('79Gi'))", act)
    assert not matches(f"{memory}.isLessThan(quantity('1Gi'))", act)
    cc = "device.attributes['gpu.nvidia.com'].cudaComputeCapability"
    assert matches(f"{cc}.compareTo(semver('9.0.0')) == 0", act)
    assert matches(f"{cc}.isGreaterThan(semver('8.9.0'))", act)  # 9.0.0 > 8.9.0, as versions
    assert not matches(f"{cc}.isLessThan(semver('10.0.0')) == false", act)
    assert not matches("1", act)  # not a boolean: no match


nodes_strategy = st.lists(
    st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=5
)  # (DRA GPUs, ready)


@settings(max_examples=60, deadline=None)
@given(
    nodes_strategy,
    st.integers(1, 4),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 7)), max_size=10),
)
def test_slots_never_promise_more_devices_than_are_free(
    layout: list[tuple[int, bool]], per_pod: int, holdings: list[tuple[int, int]]
) -> None:
    specs = [NodeSpec(name=f"n{i}", dra_gpus=g) for i, (g, _) in enumerate(layout)]
    nodes, slices = cluster(*specs)
    for manifest, (_, is_ready) in zip(nodes, layout, strict=True):
        manifest["status"]["conditions"] = [
            {"type": "Ready", "status": "True" if is_ready else "False"}
        ]
    held = {(f"n{n}", f"gpu-{d}") for n, d in holdings if n < len(layout) and d < layout[n][0]}
    claims = [claim([h]) for h in held]
    slots = free_claim_slots(nodes, slices, CLASSES, claims, GpuClaim(count=per_pod))
    free_per_node = [
        (g - sum(1 for node, _ in held if node == f"n{i}")) if ok else 0
        for i, (g, ok) in enumerate(layout)
    ]
    # Exactly the pods that fit node by node: never more (a surge the scheduler could not
    # place) and never fewer (a rollout that waits for nothing).
    assert slots == sum(f // per_pod for f in free_per_node)
    assert slots * per_pod <= sum(free_per_node)


def test_status_counts_what_the_pods_claims_were_allocated() -> None:
    from factories import md_body
    from modelplane_operator.allocation import claim_allocation, extended_allocation
    from modelplane_operator.spec import parse

    slices = NodeSpec(name="a", dra_gpus=4).resource_slices()

    def pod(name: str, claim_name: str | None, phase: str = "Running") -> dict[str, Any]:
        statuses = [{"name": "gpu", "resourceClaimName": claim_name}] if claim_name else []
        return {
            "metadata": {"name": name},
            "status": {"phase": phase, "resourceClaimStatuses": statuses},
        }

    claims = [
        {**claim([("a", "gpu-0"), ("a", "gpu-1")]), "metadata": {"name": "p1-gpu-x"}},
        {**claim([("a", "gpu-2")]), "metadata": {"name": "someone-elses"}},
        {**claim([("a", "gpu-3")]), "metadata": {"name": "p2-gpu-y"}},
    ]
    pods = [pod("p1", "p1-gpu-x"), pod("p2", "p2-gpu-y", phase="Failed"), pod("p3", None)]
    got = claim_allocation("gpu.nvidia.com", pods, claims, slices)
    assert got.to_status() == {
        "mode": "DeviceClaim",
        "deviceClassName": "gpu.nvidia.com",
        "allocated": 2,  # p1's two devices; not another's claim, not a finished pod's
        "products": ["NVIDIA H100 80GB HBM3"],
    }

    md = parse(md_body(runtime={"gpu": {"count": 2, "resource": "nvidia.com/mig-1g.10gb"}}))
    bound = {
        "spec": {
            "nodeName": "m",
            "containers": [{"resources": {"limits": {"nvidia.com/mig-1g.10gb": "2"}}}],
        },
        "status": {"phase": "Running"},
    }
    pending = {"spec": {"containers": bound["spec"]["containers"]}, "status": {"phase": "Pending"}}
    assert extended_allocation(md, [bound, pending]).to_status() == {
        "mode": "ExtendedResource",
        "resource": "nvidia.com/mig-1g.10gb",
        "allocated": 2,
    }
