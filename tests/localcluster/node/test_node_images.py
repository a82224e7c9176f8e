"""modelplane's own images reach node-0 through a registry, the image store, as on any
real cluster: the pods run the very manifests the store serves for the built tags."""

from __future__ import annotations

import urllib.request
from typing import Any

from clusterkit import Cluster
from localcluster import imagestore
from nodekit import Images, ModelStore, node_md, pods, wait_ready


def _store_digest(ref: str) -> str:
    """The manifest digest the image store serves for ``ref``'s tag."""
    name, _, tag = ref.rpartition(":")
    host, _, repo = name.partition("/")
    assert host == imagestore.host(), f"{ref} is not an image of the store"
    request = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": imagestore.MANIFEST_TYPES},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_pods_run_the_images_the_store_serves(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    real_node.apply(node_md("tiny", images, model_store.uri("v1"), "v1"), namespace=node_ns)
    wait_ready(real_node, node_ns, "tiny")
    (pod,) = pods(real_node, node_ns, "modelplane.io/deployment=tiny")
    status = pod["status"]
    runtime = next(c for c in status["containerStatuses"] if c["name"] == "runtime")
    init = next(c for c in status["initContainerStatuses"] if c["name"] == "storage-initializer")
    for container, ref in ((runtime, images.runtime), (init, images.storage)):
        assert container["image"] == ref
        # A pulled image is known by its repository digest; an imported one had none.
        assert container["imageID"] == f"{ref.rpartition(':')[0]}@{_store_digest(ref)}"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
