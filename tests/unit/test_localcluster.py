"""The simulated nodes are built the way GPU nodes look in real clusters."""

from __future__ import annotations

from localcluster import GPU_RESOURCE, KWOK_NODE_LABEL, NodeSpec, default_nodes


def test_gpu_node_carries_capacity_product_label_and_taint() -> None:
    node = NodeSpec(name="gpu-0", gpus=4, gpu_product="NVIDIA-H100-80GB-HBM3").manifest()
    assert node["status"]["capacity"][GPU_RESOURCE] == "4"
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node["spec"]["taints"] == [
        {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
    ]
    assert node["metadata"]["labels"][KWOK_NODE_LABEL] == "true"


def test_cpu_node_has_no_gpu_and_no_taint() -> None:
    node = NodeSpec(name="cpu-0").manifest()
    assert GPU_RESOURCE not in node["status"]["capacity"]
    assert "nvidia.com/gpu.product" not in node["metadata"]["labels"]
    assert node["spec"] == {}


def test_default_topology_is_two_cpu_and_two_gpu_nodes_of_four() -> None:
    nodes = default_nodes()
    assert [n.name for n in nodes] == ["cpu-0", "cpu-1", "gpu-0", "gpu-1"]
    assert sum(n.gpus for n in nodes) == 8
