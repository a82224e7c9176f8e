"""Free GPU slots on matching nodes, as the surge budget sees them."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from factories import md_body
from modelplane_operator.gpu import free_slots
from modelplane_operator.reconcile import _gpu_slots
from modelplane_operator.spec import parse


def node(name: str, gpus: int, product: str = "A100", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(gpus: int, node_name: str | None, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def test_slots_count_free_gpus_per_node_in_whole_pods() -> None:
    nodes = [node("a", 4), node("b", 4)]
    pods = [pod(3, "a"), pod(1, "b"), pod(2, "b", phase="Succeeded")]
    assert free_slots(nodes, pods, gpus_per_pod=1) == 1 + 3
    assert free_slots(nodes, pods, gpus_per_pod=2) == 0 + 1


def test_product_selector_unready_nodes_and_pending_pods() -> None:
    nodes = [node("a", 8, product="H100"), node("b", 8), node("c", 8, ready=False)]
    assert free_slots(nodes, [], gpus_per_pod=1, product="H100") == 8
    assert free_slots(nodes, [pod(1, None)], gpus_per_pod=1, product="A100") == 8 - 1


def test_a_pending_pod_holds_the_slots_its_gpus_fill() -> None:
    nodes = [node("a", 8)]
    # A pending 8-GPU pod will take the whole node: no 1-GPU slot is left for a surge.
    assert free_slots(nodes, [pod(8, None)], gpus_per_pod=1) == 0
    assert free_slots(nodes, [pod(3, None)], gpus_per_pod=1) == 5
    # A pending 1-GPU pod spoils one 2-GPU slot (it may land on either half).
    assert free_slots(nodes, [pod(1, None)], gpus_per_pod=2) == 3


class Forbidden:
    def list_nodes(self) -> list[dict[str, Any]]:
        raise ApiException(status=403, reason="Forbidden")

    def list_active_pods(self) -> list[dict[str, Any]]:
        raise AssertionError("not reached")


def test_without_cluster_wide_read_access_the_budget_does_not_block() -> None:
    slots = _gpu_slots(Forbidden(), parse(md_body()))  # type: ignore[arg-type]
    assert slots is not None and slots() > 1000
