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


def test_every_cluster_address_is_in_the_benchmarking_range_and_none_is_private() -> None:
    import ipaddress
    import re

    from localcluster import addresses
    from localcluster.cluster import ClusterState, LocalCluster
    from localcluster.components import CONTROL_PLANE

    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    for address in addresses.ALL:
        assert addresses.in_cluster_range(address), address
    for real_node in (False, True):
        cluster = LocalCluster(name="unit-addresses", real_node=real_node)
        ports = {p: 1 for c in CONTROL_PLANE for p in c.ports}
        cluster._state = ClusterState(name="unit", ports=ports, real_node=real_node)
        words = " ".join(w for c in CONTROL_PLANE if c.command for w in c.command(cluster))
        found = re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", words)
        assert found, "the commands name addresses"
        for text in found:
            network = ipaddress.ip_network(text, strict=False)
            assert not any(network.subnet_of(p) for p in private), text  # type: ignore[arg-type]
            local = network.is_loopback or network.is_unspecified  # 127.0.0.1, bind 0.0.0.0
            assert local or network.subnet_of(addresses.CLUSTER_RANGE), text  # type: ignore[arg-type]
