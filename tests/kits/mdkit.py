"""Helpers for ModelDeployment tests against a real cluster."""

from __future__ import annotations

import json
import threading
from typing import Any

from clusterkit import Cluster, wait_for


def model_deployment(name: str, version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"version": version, "uri": f"s3://models/{name}/{version}"},
        "runtime": {"gpu": {"count": 1}},
        "replicas": 1,
    }
    body.update(spec)
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_condition(
    cluster: Cluster,
    name: str,
    namespace: str,
    type_: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        md = get(cluster, "modeldeployment", name, namespace)
        cond = condition(md, type_)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return md
        return None

    return wait_for(probe, f"{type_}={status} ({reason or 'any reason'}) on md/{name}", timeout)


def events_for(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=ModelDeployment,involvedObject.name={name}",
    )["items"]
    return items


def wait_serving(
    cluster: Cluster, namespace: str, name: str, version: str, timeout: float = 90
) -> dict[str, Any]:
    """Wait until ``version`` serves every replica (Ready, AllReplicasReady)."""

    def probe() -> dict[str, Any] | None:
        md = get(cluster, "md", name, namespace)
        ready = condition(md, "Ready")
        if (
            md
            and md.get("status", {}).get("currentVersion") == version
            and ready.get("reason") == "AllReplicasReady"
        ):
            return md
        return None

    try:
        return wait_for(probe, f"md/{name} serving {version}", timeout)
    except AssertionError as exc:
        md = get(cluster, "md", name, namespace) or {}
        status = md.get("status", {})
        summary = {
            "generation": md.get("metadata", {}).get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "currentVersion": status.get("currentVersion"),
            "targetVersion": status.get("targetVersion"),
            "conditions": [
                (c["type"], c["status"], c.get("reason"), c.get("message"))
                for c in status.get("conditions", [])
            ],
            "rollout": status.get("rollout"),
        }
        raise AssertionError(f"{exc}\nmd/{name} now: {json.dumps(summary, indent=1)}") from None


def admission_answers(cluster: Cluster, namespace: str) -> str:
    """Create a throwaway Deployment as a server-side dry run: what admission answered
    (kubectl's stderr; empty when allowed). Tests poll it until their policy or webhook
    is in force."""
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "refused-probe"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    out = cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(probe),
        check=False,
    )
    return out.stderr if out.returncode else ""


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


class PodWatcher:
    """Watches the serving pods of one ModelDeployment; records min ready, max pods."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        from kubernetes import client, watch

        self.api = client.CoreV1Api(cluster.api_client())
        self.watch = watch.Watch()
        self.namespace, self.selector = namespace, f"modelplane.io/deployment={name}"
        self.pods: dict[str, dict[str, Any]] = {}
        self.min_ready: int | None = None
        self.max_pods = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodWatcher:
        listed = json.loads(
            self.api.list_namespaced_pod(
                self.namespace, label_selector=self.selector, _preload_content=False
            ).data
        )
        self.pods = {p["metadata"]["name"]: p for p in listed["items"]}
        self.resource_version = listed["metadata"]["resourceVersion"]
        self._record()
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped = True
        self.watch.stop()

    def _record(self) -> None:
        live = [p for p in self.pods.values() if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in live if _ready(p))
        self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
        self.max_pods = max(self.max_pods, len(live))

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:
            if not self.stopped:  # a closed stream after __exit__ is expected
                raise

    def _follow(self) -> None:
        for event in self.watch.stream(
            self.api.list_namespaced_pod,
            self.namespace,
            label_selector=self.selector,
            resource_version=self.resource_version,
            _preload_content=False,
            timeout_seconds=300,
        ):
            obj = event["raw_object"]
            name = obj["metadata"]["name"]
            if event["type"] == "DELETED":
                self.pods.pop(name, None)
            else:
                self.pods[name] = obj
            self._record()


def set_version(cluster: Cluster, namespace: str, name: str, version: str, **spec: Any) -> None:
    patch = {
        "spec": {"model": {"version": version, "uri": f"s3://models/{name}/{version}"}, **spec}
    }
    cluster.kubectl("patch", "md", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
