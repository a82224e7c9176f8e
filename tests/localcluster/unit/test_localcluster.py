"""The simulated nodes are built the way GPU nodes look in real clusters."""

from __future__ import annotations

from localcluster import DEVICE_CLASSES, GPU_RESOURCE, KWOK_NODE_LABEL, NodeSpec, default_nodes


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


def test_default_topology_has_every_way_of_handing_out_gpus() -> None:
    nodes = {n.name: n for n in default_nodes()}
    assert list(nodes) == [
        "cpu-0",
        "cpu-1",
        "gpu-0",
        "gpu-1",
        "dra-0",
        "dra-mig-0",
        "mig-0",
        "shared-0",
    ]
    # Whole GPUs as extended resources: the two nodes every older test counts on.
    extended = [n for n in nodes.values() if GPU_RESOURCE in n.manifest()["status"]["capacity"]]
    assert [n.name for n in extended] == ["gpu-0", "gpu-1"]
    assert sum(n.gpus for n in extended) == 8
    capacity = {name: n.manifest()["status"]["capacity"] for name, n in nodes.items()}
    assert capacity["mig-0"]["nvidia.com/mig-1g.10gb"] == "7"
    assert capacity["shared-0"]["nvidia.com/gpu.shared"] == "8"  # 2 GPUs x 4 time slices
    assert GPU_RESOURCE not in capacity["dra-0"]  # DRA devices are in ResourceSlices
    labels = nodes["shared-0"].manifest()["metadata"]["labels"]
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/gpu.product"] == "Tesla-T4"  # renamed: no -SHARED suffix
    assert nodes["mig-0"].manifest()["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    for node in nodes.values():
        taints = node.manifest()["spec"].get("taints", [])
        assert bool(taints) == node.name.startswith(("gpu", "dra", "mig", "shared"))


def test_dra_nodes_publish_slices_shaped_like_nvidias_driver() -> None:
    (gpu_slice,) = NodeSpec(name="dra-x", dra_gpus=2).resource_slices()
    spec = gpu_slice["spec"]
    assert gpu_slice["apiVersion"] == "resource.k8s.io/v1"
    assert spec["driver"] == "gpu.nvidia.com" and spec["nodeName"] == "dra-x"
    assert spec["pool"] == {"name": "dra-x", "generation": 1, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == ["gpu-0", "gpu-1"]
    device = spec["devices"][0]
    assert set(device["attributes"]) >= {
        "type", "productName", "architecture", "cudaComputeCapability", "driverVersion", "uuid"
    }  # fmt: skip
    assert device["attributes"]["cudaComputeCapability"] == {"version": "9.0.0"}
    assert device["capacity"]["memory"] == {"value": "80Gi"}
    uuids = {d["attributes"]["uuid"]["string"] for d in spec["devices"]}
    assert len(uuids) == 2 and all(u.startswith("GPU-") for u in uuids)

    (mig_slice,) = NodeSpec(name="m", dra_gpus=1, dra_mig={"1g.10gb": 2}).resource_slices()
    names = [d["name"] for d in mig_slice["spec"]["devices"]]
    assert names == ["gpu-0", "gpu-1-mig-1g10gb-20-0", "gpu-1-mig-1g10gb-20-1"]
    mig = mig_slice["spec"]["devices"][1]["attributes"]
    assert mig["type"] == {"string": "mig"} and mig["profile"] == {"string": "1g.10gb"}
    assert mig["parentUUID"]["string"].startswith("GPU-")
    assert NodeSpec(name="cpu-x").resource_slices() == []


def test_device_classes_are_nvidias() -> None:
    classes = {c["metadata"]["name"]: c["spec"] for c in DEVICE_CLASSES}
    assert classes["gpu.nvidia.com"]["selectors"] == [
        {
            "cel": {
                "expression": "device.driver == 'gpu.nvidia.com' && "
                "device.attributes['gpu.nvidia.com'].type == 'gpu'"
            }
        }
    ]
    assert classes["gpu.nvidia.com"]["extendedResourceName"] == "nvidia.com/gpu"
    assert "type == 'mig'" in classes["mig.nvidia.com"]["selectors"][0]["cel"]["expression"]


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
