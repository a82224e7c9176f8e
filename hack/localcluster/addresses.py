"""The local cluster's address plan: everything in 198.18.0.0/15, nothing leaves the machine.

198.18.0.0/15 is reserved for benchmarking (RFC 2544), so no real network uses it.
Real things (node-0, its pods, Services through kube-proxy) are reachable on this
machine only; simulated things (kwok's pods and nodes) get unreachable routes, so a
Service endpoint pointing at a simulated pod fails here at once and sends no packet out.
"""

from __future__ import annotations

import ipaddress

CLUSTER_RANGE = ipaddress.ip_network("198.18.0.0/15")

# node-0's address, on a veth end (this VM has no `dummy` links and a loopback address
# is refused as node IP); the API server advertises it to pods too.
NODE_IP = "198.18.0.10"
# node-0's pods, on the CNI bridge; the bridge holds the gateway.
NODE_POD_CIDR = "198.18.16.0/24"
NODE_POD_GATEWAY = "198.18.16.1"
# Services (kube-apiserver --service-cluster-ip-range); kube-proxy DNATs them on node-0.
SERVICE_CIDR = "198.19.0.0/16"
KUBERNETES_SERVICE_IP = "198.19.0.1"
# Simulated (kwok) pods and nodes: unreachable on this machine.
KWOK_POD_CIDR = "198.18.128.0/17"
KWOK_NODE_CIDR = "198.18.1.0/24"
KWOK_NODE_IP = "198.18.1.1"

UNREACHABLE_CIDRS = (KWOK_POD_CIDR, KWOK_NODE_CIDR)

ALL = (
    NODE_IP,
    NODE_POD_CIDR,
    NODE_POD_GATEWAY,
    SERVICE_CIDR,
    KUBERNETES_SERVICE_IP,
    KWOK_POD_CIDR,
    KWOK_NODE_CIDR,
    KWOK_NODE_IP,
)


def in_cluster_range(address: str) -> bool:
    """True for an address or network inside 198.18.0.0/15."""
    network = ipaddress.ip_network(address, strict=False)
    return network.subnet_of(CLUSTER_RANGE)  # type: ignore[arg-type]
