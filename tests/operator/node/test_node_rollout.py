"""Rollouts on real pods under real traffic: no request lost, canary traffic shares."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from clusterkit import Cluster, wait_for
from loadkit import BODY, ClosedLoop, write_report
from nodekit import Images, ModelStore, cluster_ip, node_md, pods, wait_ready

REPORT_ENV = "MODELPLANE_NODE_REPORT"  # a path without suffix: .json and .md are written
ROLLING = {"strategy": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0}


def _settled(cluster: Cluster, ns: str, version: str) -> bool:
    """The rollout is over: status says so and only pods of ``version`` are left."""
    md = cluster.get_json("md", "tiny", "-n", ns)
    status = md.get("status", {})
    if (
        status.get("currentVersion") != version
        or status.get("readyReplicas") != md["spec"]["replicas"]
    ):
        return False
    left = pods(cluster, ns, "modelplane.io/deployment=tiny")
    return all(
        p["metadata"].get("labels", {}).get("app.kubernetes.io/version") == version for p in left
    )


def _roll(
    cluster: Cluster, ns: str, images: Images, store: ModelStore, version: str
) -> dict[str, Any]:
    """Change the version under closed-loop load through the Service; the load's figures."""
    url = f"http://{cluster_ip(cluster, ns, 'tiny')}:80"
    with ClosedLoop(url, clients=4) as load:
        time.sleep(3)
        cluster.apply(
            node_md("tiny", images, store.uri(version), version, replicas=2, rollout=ROLLING),
            namespace=ns,
        )
        wait_for(
            lambda: _settled(cluster, ns, version),
            f"the rollout to {version}",
            timeout=300,
            interval=1,
        )
        time.sleep(3)
    figures = load.figures()
    served = [o.version for o in load.outcomes if o.ok]
    assert figures["failures"] == 0, figures
    assert served[0] != version and served[-20:] == [version] * 20, figures["versions"]
    assert len(figures["versions"]) == 2, figures["versions"]
    return figures


def test_rolling_update_and_rollback_under_load_lose_no_request(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """v1 -> v2 -> v1 through the Service under 4 closed-loop clients: zero failures."""
    real_node.apply(
        node_md("tiny", images, model_store.uri("v1"), "v1", replicas=2, rollout=ROLLING),
        namespace=node_ns,
    )
    wait_ready(real_node, node_ns, "tiny")
    runs = {
        "rolling update v1 -> v2": _roll(real_node, node_ns, images, model_store, "v2"),
        "rollback v2 -> v1 (kept revision)": _roll(real_node, node_ns, images, model_store, "v1"),
    }
    md = real_node.get_json("md", "tiny", "-n", node_ns)
    assert [h["revision"] for h in md["status"]["history"]][:1] == [1]  # v1's revision reused
    print(runs)
    if os.environ.get(REPORT_ENV):
        write_report(
            Path(os.environ[REPORT_ENV]),
            "Rollouts under load on the real node",
            runs,
            "Two replicas of the tiny MLP on node-0 (modelplane's images, kubelet + containerd), "
            "4 closed-loop clients with kept-alive connections through the ClusterIP "
            "(kube-proxy, iptables), maxSurge 1, maxUnavailable 0. "
            "tests/operator/node/test_node_rollout.py writes this report when "
            "MODELPLANE_NODE_REPORT is set.",
        )


def test_a_canary_at_one_of_four_replicas_gets_about_a_quarter_of_the_traffic(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """Counted by model_version in the answers, one new connection per request."""
    canary = {"strategy": "Canary", "canary": {"steps": [{"weight": 25, "pause": {}}]}}
    real_node.apply(
        node_md("tiny", images, model_store.uri("v1"), "v1", replicas=4, rollout=canary),
        namespace=node_ns,
    )
    wait_ready(real_node, node_ns, "tiny", timeout=300)
    real_node.apply(
        node_md("tiny", images, model_store.uri("v2"), "v2", replicas=4, rollout=canary),
        namespace=node_ns,
    )

    def split() -> dict[str, int] | None:
        ready: dict[str, int] = {}
        for pod in pods(real_node, node_ns, "modelplane.io/deployment=tiny"):
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                version = pod["metadata"]["labels"]["app.kubernetes.io/version"]
                ready[version] = ready.get(version, 0) + 1
        return ready if ready == {"v1": 3, "v2": 1} else None

    wait_for(split, "3 stable and 1 canary pods ready", timeout=300, interval=1)
    url = f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80/v2/models/tiny/infer"
    counts: dict[str, int] = {}
    sent = 400
    for _ in range(sent):  # a new connection each time: kube-proxy picks an endpoint per connection
        version = httpx.post(url, json=BODY, timeout=10).json()["model_version"]
        counts[version] = counts.get(version, 0) + 1
    share = counts.get("v2", 0) / sent
    # 400 draws at p = 0.25: a standard deviation of 2.2 points; 0.15..0.35 is 4.6 of them.
    assert 0.15 <= share <= 0.35, counts
    print(f"canary share {share:.3f} of {sent}: {counts}")
