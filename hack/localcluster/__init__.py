"""The local cluster: a real control plane, simulated (kwok) nodes and a real node.

Each component is declared once (``components.py``, ``node.py``): its command line, how it
is known to be ready and what its teardown cleans. ``cluster.py`` starts them in order
and stops them in reverse; ``addresses.py`` is the address plan (all in 198.18.0.0/15).
Used by ``hack/cluster.py`` (the command line) and by the pytest fixtures.
"""

from modelplane_operator.manifests import GPU_PRODUCT_LABEL
from modelplane_operator.spec import GPU_RESOURCE

from .cluster import (
    DEVICE_CLASSES,
    ClusterError,
    ClusterState,
    LocalCluster,
    NodeSpec,
    default_nodes,
)
from .components import KWOK_NODE_LABEL
from .paths import BIN_DIR, CACHE_DIR, CLUSTERS_DIR, HACK_DIR
from .processes import free_port

__all__ = [
    "BIN_DIR",
    "CACHE_DIR",
    "CLUSTERS_DIR",
    "DEVICE_CLASSES",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "HACK_DIR",
    "KWOK_NODE_LABEL",
    "ClusterError",
    "ClusterState",
    "LocalCluster",
    "NodeSpec",
    "default_nodes",
    "free_port",
]
