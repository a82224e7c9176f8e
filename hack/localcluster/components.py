"""Each component of the local cluster, declared once: its command line, how it is known
to be ready, and what its teardown leaves to clean.

The control plane is here; the real node's components are in ``node.py``. The cluster
(``cluster.py``) starts them in order and stops them in reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import addresses
from .paths import HACK_DIR
from .processes import port_open


class Site(Protocol):
    """What a component's declaration reads of its cluster."""

    name: str
    dir: Path
    pki: Path
    logs: Path
    kubeconfig: Path
    audit_log: Path

    @property
    def real_node(self) -> bool: ...

    def binary(self, tool: str) -> str: ...
    def port(self, name: str) -> int: ...
    def apiserver_ready(self) -> bool: ...


@dataclass(frozen=True)
class Component:
    """One process of the cluster (or one host setup step, when it has no command)."""

    name: str
    command: Callable[[Site], list[str]] | None = None
    ready: Callable[[Site], bool] | None = None  # polled after start, when given
    prepare: Callable[[Site], None] | None = None  # config files, host state; before start
    after_start: Callable[[Site], None] | None = None  # once its process runs
    before_stop: Callable[[Site], None] | None = None  # while it still runs
    cleanup: Callable[[Site], None] | None = None  # what its process leaves; after stop
    ports: tuple[str, ...] = ()  # names of the free ports it listens on
    grace_s: float = 10.0  # SIGTERM to SIGKILL
    env: dict[str, str] = field(default_factory=dict)
    binary: str = ""  # the executable in the bin folder, when not named as the component


def _etcd(c: Site) -> list[str]:
    peer = f"http://127.0.0.1:{c.port('etcd-peer')}"
    client = f"http://127.0.0.1:{c.port('etcd')}"
    return [
        c.binary("etcd"),
        f"--name={c.name}",
        f"--data-dir={c.dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={c.name}={peer}",
        "--unsafe-no-fsync",  # a throwaway test store: speed over durability
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def _apiserver(c: Site) -> list[str]:
    p = c.pki
    command = [
        c.binary("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{c.port('etcd')}",
        f"--secure-port={c.port('apiserver')}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--service-cluster-ip-range={addresses.SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        f"--audit-policy-file={c.dir / 'audit-policy.yaml'}",
        f"--audit-log-path={c.audit_log}",
        "--audit-log-maxsize=200",
        "--profiling=false",
        "--v=1",
    ]
    if c.real_node:
        # Pods reach the API server through the `kubernetes` Service, whose endpoint is
        # the node address; kubectl logs/exec go to the kubelet at its InternalIP.
        command += [
            "--bind-address=0.0.0.0",
            f"--advertise-address={addresses.NODE_IP}",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, for metrics-server (metrics.k8s.io) on node-0.
            f"--requestheader-client-ca-file={p / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            "--enable-aggregator-routing=true",  # to the endpoint, not the Service address
        ]
    else:
        command += [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # loopback cannot back the kubernetes Service
        ]
    return command


def kubeconfig_flags(c: Site) -> list[str]:
    """The admin kubeconfig for a component's client, authentication and authorization."""
    kc = str(c.kubeconfig)
    return [
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
    ]


def _controller_manager(c: Site) -> list[str]:
    p = c.pki
    return [
        c.binary("kube-controller-manager"),
        *kubeconfig_flags(c),
        "--bind-address=127.0.0.1",
        f"--secure-port={c.port('kcm')}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={p / 'sa.key'}",
        f"--root-ca-file={p / 'ca.crt'}",
        f"--cluster-signing-cert-file={p / 'ca.crt'}",
        f"--cluster-signing-key-file={p / 'ca.key'}",
        "--controllers=*,-node-ipam-controller",
        "--v=1",
    ]


def _scheduler(c: Site) -> list[str]:
    return [
        c.binary("kube-scheduler"),
        *kubeconfig_flags(c),
        "--bind-address=127.0.0.1",
        f"--secure-port={c.port('scheduler')}",
        "--leader-elect=false",
        "--v=1",
    ]


KWOK_NODE_LABEL = "modelplane.io/kwok-node"


def _kwok(c: Site) -> list[str]:
    return [
        c.binary("kwok"),
        f"--kubeconfig={c.kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL}=true",
        f"--config={HACK_DIR / 'kwok' / 'nodes.yaml'}",
        f"--config={HACK_DIR / 'kwok' / 'pods.yaml'}",
        f"--server-address=127.0.0.1:{c.port('kwok')}",
        f"--cidr={addresses.KWOK_POD_CIDR}",
        f"--node-ip={addresses.KWOK_NODE_IP}",
        "--node-lease-duration-seconds=40",
    ]


CONTROL_PLANE = (
    Component(
        "etcd", _etcd, ready=lambda c: port_open(c.port("etcd")), ports=("etcd", "etcd-peer")
    ),
    Component(
        "kube-apiserver", _apiserver, ready=lambda c: c.apiserver_ready(), ports=("apiserver",)
    ),
    Component("kube-controller-manager", _controller_manager, ports=("kcm",)),
    Component("kube-scheduler", _scheduler, ports=("scheduler",)),
    Component("kwok", _kwok, ports=("kwok",)),
)
