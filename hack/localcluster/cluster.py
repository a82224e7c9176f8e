"""A real, local Kubernetes control plane with simulated (kwok) nodes and, where this
machine allows, one real node running containers (``node.py``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import addresses, node
from .components import CONTROL_PLANE, KWOK_NODE_LABEL, Component
from .paths import BIN_DIR, CLUSTERS_DIR
from .pki import write_pki
from .processes import free_port, pid_alive, run, spawn, tail, terminate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))
from modelplane_operator.manifests import GPU_PRODUCT_LABEL
from modelplane_operator.spec import GPU_RESOURCE, NVIDIA_DRIVER

STARTUP_TIMEOUT_S = 90.0
NODE_STARTUP_TIMEOUT_S = 180.0
# MODELPLANE_REAL_NODE: "1" requires node-0, "0" never starts it, unset starts it where
# the machine allows (root, the Debian packages, the images built).
REAL_NODE_ENV = "MODELPLANE_REAL_NODE"


class ClusterError(RuntimeError):
    """The local control plane could not be started or reached."""


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node, with GPUs in one of the ways clusters hand them out.

    - ``gpus``: whole GPUs as the extended resource nvidia.com/gpu (device plugin);
      with ``shared_replicas`` they are time-sliced and advertised as
      nvidia.com/gpu.shared (the device plugin's ``renameByDefault``) instead.
    - ``mig``: MIG devices of the GPU operator's mixed strategy (nvidia.com/mig-<profile>).
    - ``dra_gpus`` / ``dra_mig``: devices in a ResourceSlice of NVIDIA's DRA driver
      (gpu.nvidia.com): whole GPUs, and MIG devices each on a GPU of its own profile.
    """

    name: str
    cpu: str = "32"
    memory: str = "128Gi"
    gpus: int = 0
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"
    shared_replicas: int = 0
    mig: Mapping[str, int] = field(default_factory=dict)
    dra_gpus: int = 0
    dra_mig: Mapping[str, int] = field(default_factory=dict)
    dra_product: str = "NVIDIA H100 80GB HBM3"
    dra_memory: str = "80Gi"
    dra_architecture: str = "Hopper"

    @property
    def has_gpus(self) -> bool:
        return bool(self.gpus or self.mig or self.dra_gpus or self.dra_mig)

    def manifest(self) -> dict[str, Any]:
        """The Node object as kwok expects it: status carries capacity."""
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": self._instance_type(),
            KWOK_NODE_LABEL: "true",
        }
        labels.update(self._gpu_labels())
        capacity.update(self._extended_resources())
        taints: list[dict[str, str]] = []
        if self.has_gpus:
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

    def _instance_type(self) -> str:
        if self.dra_gpus or self.dra_mig:
            return "gpu-dra"
        if self.mig:
            return "gpu-mig"
        if self.gpus and self.shared_replicas:
            return "gpu-shared"
        return "gpu" if self.gpus else "cpu"

    def _extended_resources(self) -> dict[str, str]:
        out = {f"nvidia.com/mig-{profile}": str(n) for profile, n in self.mig.items()}
        if self.gpus and self.shared_replicas:
            out[f"{GPU_RESOURCE}.shared"] = str(self.gpus * self.shared_replicas)
        elif self.gpus:
            out[GPU_RESOURCE] = str(self.gpus)
        return out

    def _gpu_labels(self) -> dict[str, str]:
        """What NVIDIA's GPU feature discovery labels device-plugin GPU nodes with."""
        if not (self.gpus or self.mig):
            return {}
        labels = {
            GPU_PRODUCT_LABEL: self.gpu_product,
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(self.gpus or 1),
        }
        if self.shared_replicas:
            labels["nvidia.com/gpu.replicas"] = str(self.shared_replicas)
            labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
        if self.mig:
            labels["nvidia.com/mig.strategy"] = "mixed"
            for profile, n in self.mig.items():
                labels[f"nvidia.com/mig-{profile}.count"] = str(n)
                labels[f"nvidia.com/mig-{profile}.product"] = f"{self.gpu_product}-MIG-{profile}"
        return labels

    def resource_slices(self) -> list[dict[str, Any]]:
        """The ResourceSlice NVIDIA's DRA driver publishes for this node (none without
        DRA devices): one pool named after the node, one slice of every device."""
        devices = [self._dra_gpu(i) for i in range(self.dra_gpus)]
        parent = self.dra_gpus
        for profile, n in self.dra_mig.items():
            devices += [self._dra_mig(parent, profile, i) for i in range(n)]
            parent += 1
        if not devices:
            return []
        return [
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceSlice",
                "metadata": {"name": f"{self.name}-{NVIDIA_DRIVER}"},
                "spec": {
                    "driver": NVIDIA_DRIVER,
                    "nodeName": self.name,
                    "pool": {"name": self.name, "generation": 1, "resourceSliceCount": 1},
                    "devices": devices,
                },
            }
        ]

    def _uuid(self, kind: str, index: int, sub: int = 0) -> str:
        digest = hashlib.sha256(f"{self.name}/{index}/{sub}".encode()).hexdigest()
        return f"{kind}-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"

    def _common_attributes(self) -> dict[str, Any]:
        return {
            "productName": {"string": self.dra_product},
            "brand": {"string": "Nvidia"},
            "architecture": {"string": self.dra_architecture},
            "cudaComputeCapability": {"version": "9.0.0"},
            "driverVersion": {"version": "575.57.8"},
            "cudaDriverVersion": {"version": "12.9.0"},
        }

    def _dra_gpu(self, index: int) -> dict[str, Any]:
        attributes = {
            "type": {"string": "gpu"},
            "uuid": {"string": self._uuid("GPU", index)},
            **self._common_attributes(),
        }
        return {
            "name": f"gpu-{index}",
            "attributes": attributes,
            "capacity": {"memory": {"value": self.dra_memory}},
        }

    def _dra_mig(self, parent: int, profile: str, index: int) -> dict[str, Any]:
        slices, memory = profile.split(".", 1)  # 1g.10gb: 1 compute slice, 10 GB
        attributes = {
            "type": {"string": "mig"},
            "uuid": {"string": self._uuid("MIG", parent, index + 1)},
            "parentUUID": {"string": self._uuid("GPU", parent)},
            "profile": {"string": profile},
            **self._common_attributes(),
        }
        return {
            # The driver's name: parent GPU, profile without dots, GI profile, placement.
            "name": f"gpu-{parent}-mig-{profile.replace('.', '')}-{19 + parent}-{index}",
            "attributes": attributes,
            "capacity": {
                "memory": {"value": f"{int(memory.removesuffix('gb')) * 1000}Mi"},
                "multiprocessors": {"value": str(14 * int(slices.removesuffix("g")))},
            },
        }


# The DeviceClasses of NVIDIA's DRA driver, as its Helm chart renders them for
# resource.k8s.io/v1 (gpu.nvidia.com also maps the nvidia.com/gpu extended resource).
DEVICE_CLASSES: tuple[dict[str, Any], ...] = tuple(
    {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {
            "selectors": [
                {
                    "cel": {
                        "expression": f"device.driver == '{NVIDIA_DRIVER}' && "
                        f"device.attributes['{NVIDIA_DRIVER}'].type == '{kind}'"
                    }
                }
            ],
            **extra,
        },
    }
    for name, kind, extra in (
        ("gpu.nvidia.com", "gpu", {"extendedResourceName": GPU_RESOURCE}),
        ("mig.nvidia.com", "mig", {}),
    )
)


def default_nodes(cpu_nodes: int = 2, gpu_nodes: int = 2, gpus_per_node: int = 4) -> list[NodeSpec]:
    """CPU nodes ``cpu-N``, GPU nodes ``gpu-N`` with ``gpus_per_node`` whole GPUs each
    (extended resources), and one node of each other way GPUs are handed out: DRA GPUs
    (``dra-0``), DRA MIG devices and a whole GPU (``dra-mig-0``), mixed-strategy MIG
    (``mig-0``) and time-sliced shared GPUs (``shared-0``)."""
    nodes = [NodeSpec(name=f"cpu-{i}") for i in range(cpu_nodes)]
    nodes += [NodeSpec(name=f"gpu-{i}", gpus=gpus_per_node) for i in range(gpu_nodes)]
    nodes += [
        NodeSpec(name="dra-0", dra_gpus=4),
        NodeSpec(
            name="dra-mig-0",
            dra_gpus=1,
            dra_mig={"1g.10gb": 7},
            dra_product="NVIDIA A100-SXM4-80GB",
            dra_architecture="Ampere",
        ),
        NodeSpec(name="mig-0", mig={"1g.10gb": 7, "3g.40gb": 1}),
        NodeSpec(name="shared-0", gpus=2, shared_replicas=4, gpu_product="Tesla-T4"),
    ]
    return nodes


@dataclass
class ClusterState:
    """What a running cluster needs to be found and stopped again (state.json)."""

    name: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    real_node: bool = False

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"


def _want_real_node() -> bool:
    wanted = os.environ.get(REAL_NODE_ENV, "")
    if wanted == "0":
        return False
    reasons = node.missing_prerequisites()
    if wanted == "1" and reasons:
        raise ClusterError("the real node cannot start: " + "; ".join(reasons))
    return not reasons


class LocalCluster:
    """A local cluster living in ``CLUSTERS_DIR/<name>``."""

    def __init__(
        self, name: str = "modelplane", bin_dir: Path = BIN_DIR, real_node: bool | None = None
    ) -> None:
        self.name = name
        self.bin_dir = bin_dir
        self.dir = CLUSTERS_DIR / name
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.logs / "audit.log"
        self.state_file = self.dir / "state.json"
        self._real_node = real_node
        self._state: ClusterState | None = None

    # ------------------------------------------------------- what components read
    @property
    def real_node(self) -> bool:
        state = self.state()
        if state is not None:
            return state.real_node
        return bool(self._real_node)

    def binary(self, tool: str) -> str:
        return str(self.bin_dir / tool)

    def port(self, name: str) -> int:
        state = self._state or self.state()
        assert state is not None, "the cluster has no state"
        return state.ports[name]

    def apiserver_ready(self) -> bool:
        state = self._state or self.state()
        return state is not None and self._healthy(state)

    def components(self) -> tuple[Component, ...]:
        return CONTROL_PLANE + (node.NODE if self.real_node else ())

    # ----------------------------------------------------------------- state
    def state(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        return ClusterState(
            name=raw["name"],
            ports=raw["ports"],
            pids=raw["pids"],
            real_node=raw.get("real_node", False),
        )

    def _save(self, state: ClusterState) -> None:
        self.state_file.write_text(json.dumps(asdict(state), indent=2))

    def is_running(self) -> bool:
        state = self.state()
        if state is None:
            return False
        expected = [c.name for c in self.components() if c.command is not None]
        alive = all(name in state.pids and pid_alive(state.pids[name]) for name in expected)
        return alive and self._healthy(state)

    # ----------------------------------------------------------------- start
    def start(self, nodes: Sequence[NodeSpec] | None = None) -> None:
        """Start every component, register the nodes and wait until usable.

        Idempotent: a healthy running cluster of this name is reused.
        """
        if self.is_running():
            return
        self.stop()
        for d in (self.pki, self.logs, self.dir / "etcd", self.dir / "node"):
            d.mkdir(parents=True, exist_ok=True)
        real_node = self._real_node if self._real_node is not None else _want_real_node()
        if real_node:
            previous = node.owner()
            if previous and previous != self.name:
                print(f"[localcluster] taking the real node over from cluster {previous!r}")
            node.sweep()  # what the previous owner (or a crash) left: one node per machine
            node.claim(self.name)
        components = CONTROL_PLANE + (node.NODE if real_node else ())
        self._check_binaries(components)
        ports = [p for c in components for p in c.ports]
        state = ClusterState(
            name=self.name, ports={p: free_port() for p in ports}, real_node=real_node
        )
        self._state = state
        self._save(state)
        try:
            write_pki(self.pki)
            self._write_kubeconfig(state)
            self._write_audit_policy()
            self._route_simulated_addresses()
            for component in components:
                self._start_component(component, state)
                if component.name == "kube-apiserver" and real_node:
                    self._authorize_node_components()
            chosen = nodes if nodes is not None else default_nodes()
            self.apply([*DEVICE_CLASSES, *(n.manifest() for n in chosen)])
            slices = [s for n in chosen for s in n.resource_slices()]
            if slices:
                self.apply(slices)
            self._wait_usable(nodes)
        except BaseException:
            self._kill_processes()  # logs stay for the post-mortem; the next start wipes them
            raise
        finally:
            self._state = None

    def _start_component(self, component: Component, state: ClusterState) -> None:
        if component.prepare is not None:
            component.prepare(self)
        if component.command is not None:
            state.pids[component.name] = self._spawn(component, state)
            self._save(state)
        if component.after_start is not None:
            component.after_start(self)
        if component.ready is not None:
            ready = component.ready
            timeout = NODE_STARTUP_TIMEOUT_S if component in node.NODE else STARTUP_TIMEOUT_S
            self._wait(lambda: ready(self), f"{component.name} to become ready", timeout)

    def _check_binaries(self, components: Sequence[Component]) -> None:
        wanted = {"kubectl"} | {c.binary or c.name for c in components if c.command is not None}
        missing = sorted(c for c in wanted if not (self.bin_dir / c).exists())
        if missing:
            raise ClusterError(
                f"missing binaries {missing} in {self.bin_dir}: run hack/build-tools.sh first"
            )

    def _spawn(self, component: Component, state: ClusterState) -> int:
        assert component.command is not None
        self._state = state
        command = component.command(self)
        env = {**os.environ, **component.env} if component.env else None
        pid = spawn(command, self.logs / f"{component.name}.log", self.dir, env)
        time.sleep(0.2)
        if not pid_alive(pid):
            log = self.logs / f"{component.name}.log"
            raise ClusterError(f"{component.name} exited at once: see {log}\n{tail(log)}")
        return pid

    def _wait(
        self, ready: Callable[[], Any], what: str, timeout: float = STARTUP_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state:
                for component, pid in state.pids.items():
                    if not pid_alive(pid):
                        log = tail(self.logs / f"{component}.log")
                        raise ClusterError(f"{component} died while waiting for {what}:\n{log}")
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

    def _route_simulated_addresses(self) -> None:
        """Simulated pods' and nodes' addresses: unreachable here, so nothing goes out."""
        if os.geteuid() != 0:
            print("[localcluster] not root: simulated pod addresses get no unreachable route")
            return
        for cidr in addresses.UNREACHABLE_CIDRS:
            run("ip", "route", "replace", "unreachable", cidr)

    def _authorize_node_components(self) -> None:
        """What the default RBAC does not grant the real node's components."""
        self._wait(lambda: self._healthy(self._state_or_fail()), "kube-apiserver /readyz")
        # The kubelet's webhook authorizer asks the API server about the API server's own
        # kubelet client (system:masters); metrics and logs readers need nodes/proxy too.
        self.kubectl(
            "create",
            "clusterrolebinding",
            "modelplane-kubelet-api-admin",
            "--clusterrole=system:kubelet-api-admin",
            "--user=kube-apiserver-kubelet-client",
            check=False,
        )

    def _state_or_fail(self) -> ClusterState:
        state = self._state or self.state()
        if state is None:
            raise ClusterError("the cluster has no state")
        return state

    def _wait_usable(self, nodes: Sequence[NodeSpec] | None) -> None:
        expected = len(nodes if nodes is not None else default_nodes()) + int(self.real_node)

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

        self._wait(nodes_ready, "nodes to become Ready")
        self._wait(default_service_account, "the default ServiceAccount")

    def restart_component(self, component: str, down_s: float = 0.0) -> None:
        """Stop one component and start it again on the same ports (fault injection)."""
        state = self.state()
        if state is None or component not in state.pids:
            raise ClusterError(f"{self.name} is not running {component}")
        declared = next(c for c in self.components() if c.name == component)
        terminate(state.pids[component], grace=declared.grace_s)
        time.sleep(down_s)
        state.pids[component] = self._spawn(declared, state)
        self._state = None
        self._save(state)
        if declared.ready is not None:
            ready = declared.ready
            self._wait(lambda: ready(self), f"{component} to become ready")

    def stop_node(self) -> None:
        """Stop the real node's components as `make cluster-down` does; the control
        plane keeps running (the teardown test, then ``start_node``)."""
        state = self._state_or_fail()
        self._state = state
        try:
            for component in reversed(node.NODE):
                self._stop_component(component, state)
                state.pids.pop(component.name, None)
            node.sweep()
            self._save(state)
        finally:
            self._state = None

    def start_node(self) -> None:
        state = self._state_or_fail()
        self._state = state
        try:
            node.claim(self.name)
            for component in node.NODE:
                self._start_component(component, state)
        finally:
            self._state = None

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stop every process of this cluster and forget its state (and data)."""
        self._kill_processes()
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_processes(self) -> None:
        state = self.state()
        if state is None:
            return
        self._state = state
        try:
            components = CONTROL_PLANE + (node.NODE if state.real_node else ())
            for component in reversed(components):
                self._stop_component(component, state)
            if state.real_node and _owns_node(self.name):
                node.sweep()
        finally:
            self._state = None

    def _stop_component(self, component: Component, state: ClusterState) -> None:
        on_node = component in node.NODE
        if on_node and not _owns_node(self.name):
            return  # another cluster took the real node over: its host state is theirs
        if component.before_stop is not None:
            with contextlib.suppress(Exception):
                component.before_stop(self)
        pid = state.pids.get(component.name)
        if pid is not None:
            terminate(pid, grace=component.grace_s)
        if component.cleanup is not None:
            with contextlib.suppress(Exception):
                component.cleanup(self)

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


def _owns_node(name: str) -> bool:
    return node.owner() == name
