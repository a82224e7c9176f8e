"""Run the operator out of cluster, as its own ServiceAccount, against a cluster.

Pods are simulated on the local control plane, so the operator runs as a local
process; it authenticates with a TokenRequest token of the ServiceAccount from
deploy/rbac.yaml, so it has exactly the permissions it would have in cluster,
and its API writes carry its own user name in the audit log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from clusterkit import Cluster, wait_for
from localcluster import free_port

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "modelplane-system"
SERVICE_ACCOUNT = "modelplane-operator"
USERNAME = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def python_path() -> str:
    """This checkout's packages first, whatever the environment has installed."""
    ours = [str(REPO / "operator"), str(REPO / "runtime")]
    return os.pathsep.join([*ours, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modeldeployments.modelplane.io",
    )


def token_kubeconfig(
    cluster: Cluster,
    path: Path,
    duration: str = "24h",
    service_account: tuple[str, str] | None = None,
) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount.

    Without ``service_account`` (namespace, name) that is the one in deploy/rbac.yaml,
    applied first; with it, an existing one (for instance a Helm release's).
    """
    if service_account is None:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "deploy" / "rbac.yaml"))
        service_account = (NAMESPACE, SERVICE_ACCOUNT)
    namespace, name = service_account
    token = cluster.kubectl(
        "create", "token", name, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context_name = admin["current-context"]
    context = next(c for c in admin["contexts"] if c["name"] == context_name)["context"]
    cluster_entry = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": context["cluster"], "user": name},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def registry_env(cluster: Cluster) -> dict[str, str]:
    """The local cluster's registries (real node only): their CA trusted, their image
    tags pinned to digests (every other registry is left alone: tests reach no other)."""
    if cluster.local is None or not cluster.local.real_node:
        return {}
    from localcluster.registries import registries

    found = registries(cluster.local)
    if not found:
        return {}
    return {
        "MODELPLANE_REGISTRY_CA_FILE": str(next(iter(found.values())).ca_file),
        "MODELPLANE_PIN_IMAGE_REGISTRIES": ",".join(r.host for r in found.values()),
    }


class OperatorProcess:
    """The operator as a child process, with its health and metrics ports."""

    def __init__(self, cluster: Cluster, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.log_path = workdir / "operator.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = free_port()
        self.metrics_port = free_port()

    def install(self) -> None:
        install_crds(self.cluster)
        token_kubeconfig(self.cluster, self.kubeconfig)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # Fresh ports each start: the old ones may have been taken meanwhile.
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            **registry_env(self.cluster),
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": python_path(),
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelplane_operator",
                "--bind-address=127.0.0.1",
                f"--health-port={self.health_port}",
                f"--metrics-port={self.metrics_port}",
                "--log-format=plain",
                "--runtime-image=registry.invalid/modelplane/runtime:test",
                *(self.extra_args or ("--all-namespaces",)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_for(self._healthy, "the operator's /healthz", timeout=60)

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
