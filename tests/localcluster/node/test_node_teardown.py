"""Stopping the real node leaves nothing behind on this machine."""

from __future__ import annotations

from typing import Any

from clusterkit import Cluster
from localcluster import node
from nodekit import Images, ModelStore, node_md, wait_ready


def test_stopping_the_node_leaves_no_process_mount_namespace_link_or_rule(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """The teardown of `make cluster-down` and the fixtures, with a model pod running."""
    real_node.apply(node_md("tiny", images, model_store.uri("v1"), "v1"), namespace=node_ns)
    wait_ready(real_node, node_ns, "tiny")
    assert node.leftovers(), "a running node has processes, mounts and links to find"
    local = real_node.local
    assert local is not None
    local.stop_node()
    try:
        assert node.leftovers() == []
    finally:
        local.start_node()
