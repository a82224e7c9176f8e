"""What tests need from a cluster: kubectl, API clients, waiting, audit events.

Works for the project's local control plane and for any cluster reachable by a
kubeconfig (kind, say); only ``audit_events`` needs the local one.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from localcluster import BIN_DIR, KWOK_NODE_LABEL, ClusterError, LocalCluster

T = TypeVar("T")


@dataclass
class Cluster:
    """A handle on a running cluster."""

    kubeconfig: Path
    kubectl_bin: str
    local: LocalCluster | None = None

    @classmethod
    def for_local(cls, local: LocalCluster) -> Cluster:
        return cls(kubeconfig=local.kubeconfig, kubectl_bin=str(BIN_DIR / "kubectl"), local=local)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, obj: dict[str, Any], namespace: str | None = None) -> None:
        args = ["apply", "--server-side", "--field-manager=modelplane-tests", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        self.kubectl(*args, input=json.dumps(obj))

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    @property
    def simulated(self) -> bool:
        """True when pods run on kwok nodes (simulated failures are available)."""
        nodes = self.get_json("nodes", "-l", f"{KWOK_NODE_LABEL}=true")
        return bool(nodes["items"])

    def audit_events(self) -> Iterator[dict[str, Any]]:
        if self.local is None:
            raise ClusterError("audit events are only available on the local control plane")
        return self.local.audit_events()

    def writes_since(
        self, username: str, namespace: str, since: datetime.datetime
    ) -> list[dict[str, Any]]:
        """The writes ``username`` made in ``namespace`` since ``since`` (the audit log
        records writes only), other namespaces left out: other tests still change theirs."""
        return [
            e
            for e in self.audit_events()
            if e["user"]["username"] == username
            and e["objectRef"].get("namespace") == namespace
            and datetime.datetime.fromisoformat(
                e["requestReceivedTimestamp"].replace("Z", "+00:00")
            )
            >= since
        ]


def _received(event: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))


def ExternalCluster(kubeconfig: Path) -> Cluster:
    """A cluster given by a kubeconfig; kubectl from the cache or PATH."""
    kubectl = BIN_DIR / "kubectl"
    binary = str(kubectl) if kubectl.exists() else shutil.which("kubectl")
    if binary is None:
        raise ClusterError("kubectl not found: run hack/build-tools.sh or install kubectl")
    return Cluster(kubeconfig=kubeconfig, kubectl_bin=binary)


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.25
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Helm:
    """The pinned helm binary, pointed at the test cluster, with its own state folders."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.cluster = cluster
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN_DIR / "helm"), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
        return proc
