"""The real node, ``node-0``: containerd, runc, CNI bridge networking, kubelet,
kube-proxy and CoreDNS on this machine, beside the simulated kwok nodes.

One real node per machine: its host state (the node address, the bridge, iptables,
containerd) is global, so the cluster that starts it owns it (``OWNER_FILE``) and a later
cluster takes it over. Settings this VM needs (cgroup v1, no CAP_SYS_RESOURCE, no
``dummy`` links) are explained where they are made. Teardown removes everything the
components leave behind; ``leftovers()`` lists what would remain, for the tests.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from . import addresses, imagestore, registries
from .components import Component, Site, kubeconfig_flags
from .paths import BIN_DIR, CACHE_DIR, CLUSTERS_DIR
from .pki import NODE_NAME
from .processes import pids_of, run, terminate

REAL_NODE_LABEL = "modelplane.io/real-node"
# Only pods meant for node-0 tolerate this, so every kwok-based test stays as it was.
REAL_NODE_TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}

RUN_DIR = Path("/run/modelplane")
STATE_ROOT = Path("/var/lib/modelplane")
OWNER_FILE = RUN_DIR / "node-owner"
CONTAINERD_SOCKET = RUN_DIR / "containerd" / "containerd.sock"
CONTAINERD_STATE = RUN_DIR / "containerd" / "state"
# Images survive clusters: they are imported once per content (hack/images.sh tags).
# containerd 2 has a root of its own: 1.6's (Debian's, used before) is not reused.
CONTAINERD_ROOT = CACHE_DIR / "containerd-2"
# containerd 2.x, built from Go modules by hack/build-tools.sh: Debian's 1.6 has no
# image volumes (the kubelet's `volumes[].image`, which ImageVolume model delivery uses).
CONTAINERD_BIN = BIN_DIR / "containerd"
CTR_BIN = BIN_DIR / "ctr"
# containerd finds its runc shim on PATH first: ours, beside it, not a distribution's.
CONTAINERD_ENV = {"PATH": f"{BIN_DIR}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
KUBELET_ROOT = STATE_ROOT / "kubelet"
POD_LOGS = STATE_ROOT / "pod-logs"
CNI_IPAM = RUN_DIR / "cni-ipam"
CNI_BIN = Path("/usr/lib/cni")
IMAGES_ENV = imagestore.IMAGES_DIR / "images.env"

BRIDGE = "mp0"
NODE_LINK = "mp-node"  # holds NODE_IP/32; its peer sits in SINK_NETNS, where packets die
SINK_LINK = "mp-sink"
SINK_NETNS = "modelplane-sink"
MOUNT_ROOTS = (RUN_DIR, STATE_ROOT, CONTAINERD_ROOT)
PROCESS_NAMES = (
    "kubelet",
    "containerd",
    "containerd-shim-runc-v2",
    "kube-proxy",
    "coredns",
    "metrics-server",
    "registry",
)
HOST_PACKAGES = {
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "htpasswd": "apache2-utils",  # the private registry's bcrypt htpasswd file
    str(CNI_BIN / "bridge"): "containernetworking-plugins",
}


def ctr(*args: str, check: bool = True, timeout: float = 120) -> str:
    return run(
        str(CTR_BIN), f"--address={CONTAINERD_SOCKET}", "--namespace=k8s.io", *args,
        check=check, timeout=timeout,
    )  # fmt: skip


# Pulling and unpacking the runtime image (torch with CUDA, about 6 GB) the first time
# takes minutes on 2 busy cores: 120 s was not always enough.
PULL_TIMEOUT_S = 900.0


# ------------------------------------------------------------------- host network
def _host_network_up(c: Site) -> None:
    run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    # Bridged pod traffic must pass iptables, or a pod's reply to a Service address skips
    # the conntrack entry that undoes kube-proxy's DNAT.
    with contextlib.suppress(RuntimeError):
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
    run("ip", "netns", "add", SINK_NETNS, check=False)
    if run("ip", "-o", "link", "show", NODE_LINK, check=False) == "":
        run("ip", "link", "add", NODE_LINK, "type", "veth", "peer", "name", SINK_LINK)
        run("ip", "link", "set", SINK_LINK, "netns", SINK_NETNS)
    run("ip", "netns", "exec", SINK_NETNS, "ip", "link", "set", SINK_LINK, "up")
    run("ip", "addr", "replace", f"{addresses.NODE_IP}/32", "dev", NODE_LINK)
    run("ip", "link", "set", NODE_LINK, "up")
    # Service addresses need a route for the first lookup, before kube-proxy's DNAT in
    # OUTPUT; one without a DNAT rule goes to the sink namespace and is dropped there.
    run(
        "ip", "route", "replace", addresses.SERVICE_CIDR, "dev", NODE_LINK, "src", addresses.NODE_IP
    )


def _host_network_down(c: Site) -> None:
    run("ip", "route", "del", addresses.SERVICE_CIDR, check=False)
    run("ip", "link", "del", NODE_LINK, check=False)
    run("ip", "netns", "del", SINK_NETNS, check=False)


# --------------------------------------------------------------------- containerd
def _drop_legacy_root() -> None:
    """containerd 1.6's image store (before node-0 ran 2.x): several GB nothing reads."""
    legacy = CACHE_DIR / "containerd"
    mounted = Path("/proc/mounts").read_text() if Path("/proc/mounts").exists() else ""
    if legacy.is_dir() and f" {legacy}/" not in mounted:
        shutil.rmtree(legacy, ignore_errors=True)


def _containerd_config(c: Site) -> None:
    _drop_legacy_root()
    node = c.dir / "node"
    (node / "cni").mkdir(parents=True, exist_ok=True)
    for d in (CONTAINERD_ROOT, CONTAINERD_STATE, CNI_IPAM):
        d.mkdir(parents=True, exist_ok=True)
    # restrict_oom_score_adj: this VM has no CAP_SYS_RESOURCE, so runc cannot lower a
    # sandbox's oom_score_adj ("can't get final child's PID from pipe: EOF" without it).
    (node / "containerd.toml").write_text(
        f"""version = 3
root = "{CONTAINERD_ROOT}"
state = "{CONTAINERD_STATE}"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause_image()}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{node / "certs.d"}"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{node / "cni"}"
"""
    )
    registries.containerd_hosts(c, node / "certs.d")
    imagestore.containerd_hosts(node / "certs.d")
    # Pod networking: one bridge, host-local addresses in NODE_POD_CIDR, no masquerade
    # (nothing may leave the machine; the host reaches the bridge directly).
    conflist = {
        "cniVersion": "1.0.0",
        "name": "modelplane",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(CNI_IPAM),
                    "ranges": [
                        [{"subnet": addresses.NODE_POD_CIDR, "gateway": addresses.NODE_POD_GATEWAY}]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }
    (node / "cni" / "10-modelplane.conflist").write_text(json.dumps(conflist, indent=2))


def _containerd(c: Site) -> list[str]:
    config = c.dir / "node" / "containerd.toml"
    return [str(CONTAINERD_BIN), f"--config={config}", "--log-level=warn"]


def _containerd_ready(c: Site) -> bool:
    if not CONTAINERD_SOCKET.exists():
        return False
    try:
        ctr("version")
    except RuntimeError:
        return False
    return True


def _kill_containers(c: Site) -> None:
    """Every container and sandbox goes, before containerd stops (SIGKILL: a pod that
    ignores SIGTERM would otherwise hold teardown for its grace period)."""
    if not CONTAINERD_SOCKET.exists():
        return
    for task in ctr("tasks", "ls", "-q", check=False).split():
        ctr("tasks", "kill", "--signal=SIGKILL", task, check=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (tasks := ctr("tasks", "ls", "-q", check=False).split()):
        for task in tasks:
            ctr("tasks", "delete", "--force", task, check=False)
        time.sleep(0.2)
    containers = ctr("containers", "ls", "-q", check=False).split()
    if containers:
        ctr("containers", "delete", *containers, check=False)


# ------------------------------------------------------------------------- images
def image_refs() -> dict[str, str]:
    """The images hack/images.sh built: MODELPLANE_*_IMAGE -> reference."""
    if not IMAGES_ENV.exists():
        return {}
    refs = {}
    for line in IMAGES_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if value:
            refs[key.strip()] = value.strip()
    return refs


def pause_image() -> str:
    missing = f"{imagestore.host()}/modelplane/pause:missing"
    return image_refs().get("MODELPLANE_PAUSE_IMAGE", missing)


def _pull_images(c: Site) -> None:
    pull_images(c)


def _ours(ref: str) -> bool:
    """A reference to one of modelplane's images, from the store (or imported, before it)."""
    host, _, repository = ref.partition("/")
    local = host in ("localhost", imagestore.host()) or host.startswith("127.0.0.1:")
    return local and repository.startswith(imagestore.REPOSITORY_PREFIX)


def _listed() -> dict[str, str]:
    """containerd's image references and the manifest digest each names."""
    lines = ctr("images", "ls", check=False).splitlines()[1:]  # REF TYPE DIGEST SIZE …
    return {f[0]: f[2] for f in (line.split() for line in lines) if len(f) > 2}


def _by_digest(ref: str, digest: str) -> str:
    return f"{ref.rpartition(':')[0]}@{digest}"


def pull_images(c: Site) -> list[str]:
    """Pull each built image containerd lacks from the image store, as a node pulls from
    any registry (only missing layers move); drop older references to modelplane's images.

    Older ones go first, with a synchronous garbage collection, so that the disk never
    holds an old and a new runtime image (several GB each) at once. A pulled image also
    gets its ``name@sha256:…`` reference, as the CRI's own pulls do, so that pods report
    the manifest digest they run as their imageID.
    """
    wanted = set(image_refs().values())
    listed = _listed()
    keep = wanted | {_by_digest(r, listed[r]) for r in wanted if r in listed}
    stale = [r for r in listed if _ours(r) and r not in keep]
    if stale:
        ctr("images", "rm", "--sync", *stale, check=False)
    pulled = sorted(wanted - listed.keys())
    for ref in pulled:
        ctr(
            "images", "pull", f"--hosts-dir={c.dir / 'node' / 'certs.d'}",
            "--snapshotter=overlayfs", ref, timeout=PULL_TIMEOUT_S,
        )  # fmt: skip
    listed = _listed() if pulled else listed
    for ref in sorted(wanted & listed.keys()):
        if _by_digest(ref, listed[ref]) not in listed:
            ctr("images", "tag", "--force", ref, _by_digest(ref, listed[ref]))
    return pulled


# ------------------------------------------------------------------------ kubelet
def _node_kubeconfig(c: Site, cert: str) -> Path:
    path = c.dir / "node" / f"{cert}.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": f"https://127.0.0.1:{c.port('apiserver')}",
                    "certificate-authority": str(c.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": cert,
                "user": {
                    "client-certificate": str(c.pki / f"{cert}.crt"),
                    "client-key": str(c.pki / f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": cert}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _kubelet_config(c: Site) -> None:
    KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
    POD_LOGS.mkdir(parents=True, exist_ok=True)
    _node_kubeconfig(c, "kubelet-client")
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The kernel mounts cgroup v1.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": addresses.NODE_IP,
        "port": c.port("kubelet"),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": c.port("kubelet-healthz"),
        "tlsCertFile": str(c.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(c.pki / "kubelet-serving.key"),
        "rotateCertificates": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(c.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [addresses.NODE_IP],
        "resolvConf": "",  # pods get CoreDNS only: no host resolver, nothing leaves
        "failSwapOn": False,
        "podLogsDir": str(POD_LOGS),
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        # The disk is shared with builds and caches: evict only when nearly full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "maxPods": 40,
    }
    (c.dir / "node" / "kubelet.yaml").write_text(json.dumps(config, indent=2))


def _kubelet(c: Site) -> list[str]:
    taint = REAL_NODE_TAINT
    return [
        c.binary("kubelet"),
        f"--config={c.dir / 'node' / 'kubelet.yaml'}",
        f"--kubeconfig={c.dir / 'node' / 'kubelet-client.kubeconfig'}",
        f"--root-dir={KUBELET_ROOT}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={addresses.NODE_IP}",
        f"--node-labels={REAL_NODE_LABEL}=true,node.kubernetes.io/instance-type=real",
        f"--register-with-taints={taint['key']}={taint['value']}:{taint['effect']}",
        "--v=1",
    ]


def _condition_true(c: Site, kind: str, name: str, condition: str) -> bool:
    """Whether the object's status condition ``condition`` is True (kubectl, admin)."""
    jsonpath = f"jsonpath={{.status.conditions[?(@.type=='{condition}')].status}}"
    out = run(
        c.binary("kubectl"),
        f"--kubeconfig={c.kubeconfig}",
        "get",
        kind,
        name,
        "-o",
        jsonpath,
        check=False,
    )
    return out.strip() == "True"


def _kubelet_ready(c: Site) -> bool:
    return _condition_true(c, "node", NODE_NAME, "Ready")


def _kubelet_cleanup(c: Site) -> None:
    _unmount_under(KUBELET_ROOT)
    _remove_cgroups("kubepods")


# --------------------------------------------------------------------- kube-proxy
def _kube_proxy(c: Site) -> list[str]:
    return [
        c.binary("kube-proxy"),
        f"--kubeconfig={_node_kubeconfig(c, 'kube-proxy')}",
        f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables",
        f"--cluster-cidr={addresses.NODE_POD_CIDR}",
        f"--healthz-bind-address=127.0.0.1:{c.port('kube-proxy-healthz')}",
        f"--metrics-bind-address=127.0.0.1:{c.port('kube-proxy-metrics')}",
        # conntrack limits are the host's business, not a test cluster's.
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        "--v=1",
    ]


def _kube_proxy_cleanup(c: Site) -> None:
    run(c.binary("kube-proxy"), "--cleanup", check=False)


# ------------------------------------------------------------------------ CoreDNS
def _coredns_config(c: Site) -> None:
    health, ready = c.port("coredns-health"), c.port("coredns-ready")
    # cluster.local only: no forward plugin, so no query ever leaves the machine.
    (c.dir / "node" / "Corefile").write_text(
        f""".:53 {{
    bind {addresses.NODE_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {c.kubeconfig}
        pods insecure
    }}
    cache 5
}}
"""
    )


def _coredns(c: Site) -> list[str]:
    return [c.binary("coredns"), "-conf", str(c.dir / "node" / "Corefile")]


# ------------------------------------------------------------------ metrics-server
def _metrics_server(c: Site) -> list[str]:
    return [
        c.binary("metrics-server"),
        *kubeconfig_flags(c),
        f"--bind-address={addresses.NODE_IP}",
        f"--secure-port={c.port('metrics-server')}",
        f"--tls-cert-file={c.pki / 'metrics-server.crt'}",
        f"--tls-private-key-file={c.pki / 'metrics-server.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--kubelet-certificate-authority={c.pki / 'ca.crt'}",
        # Only node-0 has a kubelet; kwok nodes' addresses are unreachable by design.
        "--node-selector=modelplane.io/real-node=true",
        "--metric-resolution=15s",
        "--kubelet-request-timeout=5s",
        "--v=1",
    ]


def _register_metrics_api(c: Site) -> None:
    """A Service without selector whose endpoint is the host process, and the APIService."""
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            "spec": {"ports": [{"port": 443, "targetPort": c.port("metrics-server")}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "metrics-server-host",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "metrics-server"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addresses.NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"port": c.port("metrics-server"), "protocol": "TCP", "name": ""}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
                "caBundle": base64.b64encode((c.pki / "ca.crt").read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    run(
        c.binary("kubectl"),
        f"--kubeconfig={c.kubeconfig}",
        "apply",
        "--server-side",
        "-f",
        "-",
        input=doc,
    )


def _metrics_api_available(c: Site) -> bool:
    return _condition_true(c, "apiservice", "v1beta1.metrics.k8s.io", "Available")


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


NODE = (
    Component("host-network", prepare=_host_network_up, cleanup=_host_network_down),
    # On node-0's address, before containerd, whose hosts directory names their ports.
    *registries.COMPONENTS,
    imagestore.COMPONENT,  # modelplane's own images
    Component(
        "containerd",
        _containerd,
        prepare=_containerd_config,
        ready=_containerd_ready,
        before_stop=_kill_containers,
        env=CONTAINERD_ENV,
    ),
    # The built images, pulled before the kubelet may need them (imagePullPolicy
    # IfNotPresent then finds them in containerd).
    Component("images", prepare=_pull_images),
    Component(
        "kubelet",
        _kubelet,
        prepare=_kubelet_config,
        ready=_kubelet_ready,
        cleanup=_kubelet_cleanup,
        ports=("kubelet", "kubelet-healthz"),
    ),
    Component(
        "kube-proxy",
        _kube_proxy,
        ready=lambda c: _http_ok(f"http://127.0.0.1:{c.port('kube-proxy-healthz')}/healthz"),
        cleanup=_kube_proxy_cleanup,
        ports=("kube-proxy-healthz", "kube-proxy-metrics"),
    ),
    Component(
        "coredns",
        _coredns,
        prepare=_coredns_config,
        ready=lambda c: _http_ok(f"http://127.0.0.1:{c.port('coredns-ready')}/ready"),
        ports=("coredns-health", "coredns-ready"),
    ),
    Component(
        "metrics-server",
        _metrics_server,
        after_start=_register_metrics_api,
        ready=_metrics_api_available,
        ports=("metrics-server",),
    ),
)


# ------------------------------------------------------------- owner and teardown
def missing_prerequisites() -> list[str]:
    """Why this machine cannot run the real node; empty when it can."""
    import shutil

    reasons = []
    if os.geteuid() != 0:
        reasons.append("the real node needs root (network namespaces, iptables, mounts)")
    missing = sorted(
        {
            pkg
            for tool, pkg in HOST_PACKAGES.items()
            if shutil.which(tool) is None and not Path(tool).exists()
        }
    )
    if missing:
        reasons.append(f"missing Debian packages: {' '.join(missing)} (hack/node-prereqs.sh)")
    refs = image_refs()
    if "MODELPLANE_PAUSE_IMAGE" not in refs:
        reasons.append(f"no images built ({IMAGES_ENV} is missing): run make images")
    return reasons


def owner() -> str | None:
    """The cluster that last started the real node (the name in OWNER_FILE)."""
    try:
        return OWNER_FILE.read_text().strip() or None
    except OSError:
        return None


def claim(owner: str) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(f"{owner}\n")


def _our_processes() -> list[int]:
    """The node's processes: each names one of our folders on its command line."""
    markers = (str(RUN_DIR), str(STATE_ROOT), str(CLUSTERS_DIR))
    return [
        pid
        for name in PROCESS_NAMES
        for pid in pids_of(name)
        if any(marker in _cmdline(pid) for marker in markers)
    ]


def sweep() -> None:
    """Remove whatever a component left: processes, mounts, namespaces, links, rules."""
    for pid in _our_processes():
        terminate(pid, grace=2)
    for netns in run("ip", "netns", "list", check=False).split("\n"):
        name = netns.split(" ")[0]
        if name.startswith("cni-") or name == SINK_NETNS:
            run("ip", "netns", "del", name, check=False)
    # `ip netns add` made /run/netns a mount point of its own; once empty, it goes too.
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir() and not any(netns_dir.iterdir()) and _mounts_under(netns_dir):
        run("umount", str(netns_dir), check=False)
    for root in MOUNT_ROOTS:
        _unmount_under(root)
    _remove_cgroups("kubepods")
    for link in (BRIDGE, NODE_LINK):
        run("ip", "link", "del", link, check=False)
    for line in run("ip", "-o", "link", "show", "master", BRIDGE, check=False).splitlines():
        run("ip", "link", "del", line.split(":")[1].strip().split("@")[0], check=False)
    run("ip", "route", "del", addresses.SERVICE_CIDR, check=False)
    _remove_iptables_chains()
    with contextlib.suppress(OSError):
        OWNER_FILE.unlink()


def leftovers() -> list[str]:
    """What a stopped node would leave behind; empty when teardown was complete."""
    found = [f"process {pid}: {_cmdline(pid)[:120]}" for pid in _our_processes()]
    found += [f"mount {m}" for m in _mounts_under(*MOUNT_ROOTS)]
    for netns in run("ip", "netns", "list", check=False).splitlines():
        if netns.startswith(("cni-", SINK_NETNS)):
            found.append(f"network namespace {netns}")
    for link in (BRIDGE, NODE_LINK):
        if run("ip", "-o", "link", "show", link, check=False):
            found.append(f"link {link}")
    if run("ip", "route", "show", addresses.SERVICE_CIDR, check=False).strip():
        found.append(f"route {addresses.SERVICE_CIDR}")
    found += [f"iptables chain {c}" for c in _our_chains()]
    return found


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _mounts_under(*roots: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            mounts.append(point)
    return mounts


def _unmount_under(root: Path) -> None:
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        run("umount", "-l", point, check=False)


def _remove_cgroups(name: str) -> None:
    base = Path("/sys/fs/cgroup")
    for controller in base.iterdir() if base.exists() else ():
        top = controller / name
        if not top.is_dir():
            continue
        for cgroup in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if cgroup.is_dir():
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


TABLES = ("filter", "nat", "mangle")
CHAIN_PREFIXES = ("KUBE-", "CNI-")


def _our_chains() -> list[str]:
    chains = []
    for table in TABLES:
        for line in run("iptables-save", "-t", table, check=False).splitlines():
            if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES):
                chains.append(f"{table}/{line[1:].split()[0]}")
    return chains


def _remove_iptables_chains() -> None:
    """Drop the kubelet's, kube-proxy's and CNI's chains and every rule that jumps to them,
    leaving the rest of each table as it was."""
    for table in TABLES:
        dump = run("iptables-save", "-t", table, check=False)
        if not any(p in dump for p in CHAIN_PREFIXES):
            continue
        kept = [line for line in dump.splitlines() if not any(p in line for p in CHAIN_PREFIXES)]
        run("iptables-restore", input="\n".join(kept) + "\n", check=False)
