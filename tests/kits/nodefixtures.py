"""Fixtures of the node tier (tests/*/node): node-0 present, the built images, the model store.

These tests run modelplane's own images in real pods on node-0 (kubelet, containerd,
runc). They skip where the local cluster has no real node, and fail instead when
MODELPLANE_REAL_NODE=1 (CI) says it must have one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from clusterkit import Cluster
from nodekit import MODELS_ROOT, Images, ModelStore, build_model_store, serve_models


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> Cluster:
    local = cluster.local
    if local is None or not local.real_node:
        if os.environ.get("MODELPLANE_REAL_NODE") == "1":
            pytest.fail("MODELPLANE_REAL_NODE=1 but the cluster has no real node")
        pytest.skip("the local cluster has no real node (root, Debian packages, make images)")
    return cluster


@pytest.fixture(scope="session")
def images(real_node: Cluster) -> Images:
    return Images.built()


@pytest.fixture(scope="session")
def model_store(
    real_node: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelStore]:
    expected = build_model_store(tmp_path_factory.mktemp("models"))
    for url in serve_models(MODELS_ROOT):
        yield ModelStore(root=MODELS_ROOT, url=url, expected=expected)


@pytest.fixture
def node_ns(real_node: Cluster, namespace: str) -> str:
    """A namespace that enforces the restricted Pod Security Standard."""
    real_node.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return namespace
