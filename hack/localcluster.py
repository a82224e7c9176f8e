"""A real, local Kubernetes control plane with simulated (kwok) nodes.

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
127.0.0.1 from the binaries that ``hack/build-tools.sh`` builds into the cache,
with freshly generated certificates and an admin kubeconfig. Nodes are simulated
by kwok: CPU nodes and GPU nodes advertising ``nvidia.com/gpu`` capacity, the
``nvidia.com/gpu.product`` label and the ``nvidia.com/gpu`` NoSchedule taint that
the NVIDIA GPU operator puts on GPU nodes.

Used by ``hack/cluster.py`` (the command line) and by the pytest fixtures.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HACK_DIR = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("MODELPLANE_CACHE", Path.home() / ".cache" / "modelplane"))
BIN_DIR = CACHE_DIR / "bin"
CLUSTERS_DIR = CACHE_DIR / "clusters"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KWOK_NODE_LABEL = "modelplane.io/kwok-node"
STARTUP_TIMEOUT_S = 90.0

# The processes in start order; stop runs in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    """The local control plane could not be started or reached."""


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node."""

    name: str
    cpu: str = "32"
    memory: str = "128Gi"
    gpus: int = 0
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"

    def manifest(self) -> dict[str, Any]:
        """The Node object as kwok expects it: status carries capacity."""
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "gpu" if self.gpus else "cpu",
            KWOK_NODE_LABEL: "true",
        }
        taints: list[dict[str, str]] = []
        if self.gpus:
            capacity[GPU_RESOURCE] = str(self.gpus)
            labels[GPU_PRODUCT_LABEL] = self.gpu_product
            labels["nvidia.com/gpu.count"] = str(self.gpus)
            labels["nvidia.com/gpu.present"] = "true"
            taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": taints} if taints else {},
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }


def default_nodes(cpu_nodes: int = 2, gpu_nodes: int = 2, gpus_per_node: int = 4) -> list[NodeSpec]:
    """CPU nodes ``cpu-N`` and GPU nodes ``gpu-N`` with ``gpus_per_node`` GPUs each."""
    nodes = [NodeSpec(name=f"cpu-{i}") for i in range(cpu_nodes)]
    nodes += [NodeSpec(name=f"gpu-{i}", gpus=gpus_per_node) for i in range(gpu_nodes)]
    return nodes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ClusterState:
    """What a running cluster needs to be found and stopped again (state.json)."""

    name: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"


class LocalCluster:
    """A local control plane living in ``CLUSTERS_DIR/<name>``."""

    def __init__(self, name: str = "modelplane", bin_dir: Path = BIN_DIR) -> None:
        self.name = name
        self.bin_dir = bin_dir
        self.dir = CLUSTERS_DIR / name
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.logs / "audit.log"
        self.state_file = self.dir / "state.json"

    # ----------------------------------------------------------------- state
    def state(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        return ClusterState(name=raw["name"], ports=raw["ports"], pids=raw["pids"])

    def _save(self, state: ClusterState) -> None:
        self.state_file.write_text(json.dumps(asdict(state), indent=2))

    def is_running(self) -> bool:
        state = self.state()
        if state is None:
            return False
        alive = all(_pid_alive(pid) for pid in state.pids.values())
        return alive and len(state.pids) == len(COMPONENTS) and self._healthy(state)

    # ----------------------------------------------------------------- start
    def start(self, nodes: Sequence[NodeSpec] | None = None) -> None:
        """Start every component, register the nodes and wait until usable.

        Idempotent: a healthy running cluster of this name is reused.
        """
        if self.is_running():
            return
        self.stop()
        for d in (self.pki, self.logs, self.dir / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        self._check_binaries()
        state = ClusterState(
            name=self.name,
            ports={
                k: free_port()
                for k in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")
            },
        )
        self._save(state)
        try:
            _write_pki(self.pki)
            self._write_kubeconfig(state)
            self._write_audit_policy()
            for component in COMPONENTS:
                state.pids[component] = self._spawn(component, self._command(component, state))
                self._save(state)
                if component == "etcd":
                    self._wait(lambda: _port_open(state.ports["etcd"]), "etcd to listen")
                elif component == "kube-apiserver":
                    self._wait(lambda: self._healthy(state), "kube-apiserver /readyz")
            self.apply([n.manifest() for n in (nodes if nodes is not None else default_nodes())])
            self._wait_usable(nodes)
        except BaseException:
            self._kill_processes()  # logs stay for the post-mortem; the next start wipes them
            raise

    def _check_binaries(self) -> None:
        missing = [c for c in (*COMPONENTS, "kubectl") if not (self.bin_dir / c).exists()]
        if missing:
            raise ClusterError(
                f"missing binaries {missing} in {self.bin_dir}: run hack/build-tools.sh first"
            )

    def _command(self, component: str, state: ClusterState) -> list[str]:
        p, ports, kc = self.pki, state.ports, str(self.kubeconfig)
        binary = str(self.bin_dir / component)
        if component == "etcd":
            return [
                binary,
                f"--name={self.name}",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
                f"--initial-cluster={self.name}=http://127.0.0.1:{ports['etcd-peer']}",
                "--unsafe-no-fsync",  # a throwaway test store: speed over durability
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ]
        if component == "kube-apiserver":
            return [
                binary,
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # loopback cannot back the kubernetes Service
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--profiling=false",
                "--v=1",
            ]
        if component == "kube-controller-manager":
            return [
                binary,
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kcm']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                "--controllers=*,-node-ipam-controller",
                "--v=1",
            ]
        if component == "kube-scheduler":
            return [
                binary,
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--v=1",
            ]
        if component == "kwok":
            return [
                binary,
                f"--kubeconfig={kc}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL}=true",
                f"--config={HACK_DIR / 'kwok' / 'nodes.yaml'}",
                f"--config={HACK_DIR / 'kwok' / 'pods.yaml'}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
            ]
        raise ValueError(component)

    def _spawn(self, component: str, command: list[str]) -> int:
        log = open(self.logs / f"{component}.log", "ab")  # noqa: SIM115 - child keeps it
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the caller's terminal must not orphan state
            cwd=self.dir,
        )
        log.close()
        time.sleep(0.2)
        if proc.poll() is not None:
            raise ClusterError(f"{component} exited at once: see {self.logs / component}.log")
        return proc.pid

    def _wait(self, ready: Any, what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state:
                for component, pid in state.pids.items():
                    if not _pid_alive(pid):
                        tail = _tail(self.logs / f"{component}.log")
                        raise ClusterError(f"{component} died while waiting for {what}:\n{tail}")
            if ready():
                return
            time.sleep(0.25)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _healthy(self, state: ClusterState) -> bool:
        try:
            with urllib.request.urlopen(
                f"{state.server}/readyz", context=self._ssl_context(), timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_usable(self, nodes: Sequence[NodeSpec] | None) -> None:
        expected = len(nodes if nodes is not None else default_nodes())

        def nodes_ready() -> bool:
            items = self.get_json("nodes")["items"]
            ready = [
                n
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ]
            return len(ready) >= expected

        def default_service_account() -> bool:
            out = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            return out.returncode == 0

        self._wait(nodes_ready, "simulated nodes to become Ready")
        self._wait(default_service_account, "the default ServiceAccount")

    def restart_component(self, component: str, down_s: float = 0.0) -> None:
        """Stop one component and start it again on the same ports (fault injection)."""
        state = self.state()
        if state is None or component not in state.pids:
            raise ClusterError(f"{self.name} is not running {component}")
        _terminate(state.pids[component])
        time.sleep(down_s)
        state.pids[component] = self._spawn(component, self._command(component, state))
        self._save(state)
        if component == "kube-apiserver":
            self._wait(lambda: self._healthy(state), "kube-apiserver /readyz")

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stop every process of this cluster and forget its state (and data)."""
        self._kill_processes()
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_processes(self) -> None:
        state = self.state()
        if state is not None:
            for component in reversed(COMPONENTS):
                pid = state.pids.get(component)
                if pid is not None:
                    _terminate(pid)

    # --------------------------------------------------------------- helpers
    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, objects: Sequence[dict[str, Any]]) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.kubectl(
            "apply", "--server-side", "--field-manager=modelplane-dev", "-f", "-", input=doc
        )

    def _write_kubeconfig(self, state: ClusterState) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": state.server,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self.pki / "admin.crt"),
                        "client-key": str(self.pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": "admin"}}],
            "current-context": self.name,
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _write_audit_policy(self) -> None:
        # Every write (not reads, not lease renewals) with its user: tests count
        # the operator's writes from this log.
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "None", "verbs": ["get", "list", "watch"]},
                {
                    "level": "None",
                    "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
                },
                {"level": "Metadata"},
            ],
        }
        (self.dir / "audit-policy.yaml").write_text(json.dumps(policy))

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Audit events of completed write requests (stage ResponseComplete)."""
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as f:
            for line in f:
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
                    if event.get("stage") == "ResponseComplete":
                        yield event


# ---------------------------------------------------------------- processes
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _terminate(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------- PKI
def _write_pki(pki: Path) -> None:
    """A CA, the API server's serving cert, an admin client cert, the SA keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def save_key(key: Any, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def save_cert(cert: x509.Certificate, path: Path) -> None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("modelplane-local-ca"))
        .issuer_name(name("modelplane-local-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    save_key(ca_key, pki / "ca.key")
    save_cert(ca_cert, pki / "ca.crt")

    def issue(cn: str, org: str | None, server: bool, out: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn, org))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    ]
                ),
                critical=False,
            )
        save_key(key, pki / f"{out}.key")
        save_cert(builder.sign(ca_key, hashes.SHA256()), pki / f"{out}.crt")

    issue("kube-apiserver", None, server=True, out="apiserver")
    issue("modelplane-admin", "system:masters", server=False, out="admin")

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    save_key(sa_key, pki / "sa.key")
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
