"""Canaries judged by their own metrics, and replicas that follow load, on real pods.

The operator scrapes the runtime's /metrics at the pods' addresses on node-0; the load
goes through the Service (kube-proxy). The faulty and slow models are built here: a
model that fails every request carrying a value above 5 (a torch.export runtime
assertion, so the runtime answers 500), and the tiny MLP behind a long forward pass.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from clusterkit import Cluster, wait_for
from loadkit import BODY, ClosedLoop, Outcome
from modelplane_operator.reconcile import AUTOSCALE_PERIOD_S
from modelplane_runtime.package import load_factory, package_model
from nodekit import EXAMPLES, Images, ModelStore, cluster_ip, condition, node_md, pods, wait_ready
from provenance import commit
from runtimekit import SlowTinyMLP

TIMELINE_ENV = "MODELPLANE_CANARY_TIMELINE"  # a path: the aborted canary's load, as JSON
POISON = copy.deepcopy(BODY)
POISON["inputs"][0]["data"] = [10.0] * len(BODY["inputs"][0]["data"])


class Faulty(torch.nn.Module):
    """The tiny MLP, failing (at run time, in the exported program) on inputs above 5."""

    def __init__(self, tiny: torch.nn.Module) -> None:
        super().__init__()
        self.tiny = tiny

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        poisoned = (x > 5.0).sum().item()
        torch._check(poisoned == 0)
        out: torch.Tensor = self.tiny(x)
        return out


def _publish(store: ModelStore, module: torch.nn.Module, version: str, work: Path) -> None:
    folder = work / version
    package_model(module, {"x": torch.randn(2, 16)}, folder, name="tiny", max_batch_size=64)
    archive = store.root / f"tiny-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(folder, arcname="tiny")
    archive.chmod(0o644)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def test_models(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    work = tmp_path_factory.mktemp("analysis-models")
    tiny = load_factory(f"{EXAMPLES}:tiny_mlp")
    torch.manual_seed(3)
    _publish(model_store, Faulty(tiny()).eval(), "faulty", work)
    torch.manual_seed(4)
    _publish(model_store, SlowTinyMLP(tiny(), width=1024, depth=12).eval(), "slow", work)
    return model_store


def _canary(analysis: dict[str, Any], *weights: int) -> dict[str, Any]:
    steps = [{"weight": w, "pause": {}} for w in weights]
    return {"strategy": "Canary", "canary": {"steps": steps, "analysis": analysis}}


def _md(cluster: Cluster, ns: str) -> dict[str, Any]:
    md: dict[str, Any] = cluster.get_json("md", "tiny", "-n", ns)
    return md


def _rolled_back(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    md = _md(cluster, ns)
    ready = condition(md, "Ready")
    return (
        md
        if md["status"].get("rollout", {}).get("phase") == "RolledBack"
        and (ready.get("reason") == "AnalysisFailed")
        else None
    )


def _event_messages(cluster: Cluster, ns: str, reason: str) -> list[str]:
    events = cluster.get_json("events", "-n", ns, "--field-selector", f"reason={reason}")
    return [e["message"] for e in events["items"]]


def _start(cluster: Cluster, ns: str, images: Images, store: ModelStore, rollout: dict[str, Any],
           replicas: int = 2) -> str:  # fmt: skip
    cluster.apply(node_md("tiny", images, store.uri("v1"), "v1", replicas, rollout=rollout), ns)
    wait_ready(cluster, ns, "tiny", timeout=300)
    return f"http://{cluster_ip(cluster, ns, 'tiny')}:80"


def _timeline(outcomes: list[Outcome], stable: str) -> list[dict[str, Any]]:
    """Per second: requests, the share answered by (or failed on) the canary, errors."""
    rows: dict[int, dict[str, int]] = {}
    for o in outcomes:
        row = rows.setdefault(int(o.at), {"requests": 0, "canary": 0, "errors": 0})
        row["requests"] += 1
        row["errors"] += not o.ok
        row["canary"] += (not o.ok) or o.version != stable
    return [{"second": s, **row} for s, row in sorted(rows.items())]


def test_a_canary_that_fails_a_share_of_requests_is_aborted_and_stable_serves(
    real_node: Cluster, images: Images, test_models: ModelStore, node_ns: str, operator: Any
) -> None:
    """A third of the load is poison the canary fails on; stable fails none of it."""
    rules = {"interval": "10s", "minRequests": 20, "minSuccessRate": 99, "failureLimit": 2}
    url = _start(real_node, node_ns, images, test_models, _canary(rules, 50))
    faulty = node_md("tiny", images, test_models.uri("faulty"), "faulty", 2,
                     rollout=_canary(rules, 50))  # fmt: skip
    with ClosedLoop(
        url, clients=3, bodies=(BODY, BODY, POISON), max_seconds=240, fresh=True
    ) as load:
        time.sleep(3)
        started = time.monotonic()
        changed_at = started - load.started
        real_node.apply(faulty, node_ns)
        md = wait_for(lambda: _rolled_back(real_node, node_ns), "the canary aborted",
                      timeout=180, interval=1)  # fmt: skip
        aborted_after = time.monotonic() - started
        wait_for(lambda: not pods(real_node, node_ns, "app.kubernetes.io/version=faulty"),
                 "the canary's pods gone", timeout=90)  # fmt: skip
        after_abort = len(load.outcomes)
        time.sleep(5)
    outcomes = list(load.outcomes)
    failed = [o for o in outcomes if not o.ok]
    # Every failure is the canary's: poison (the stable model answers it) that reached it.
    assert failed, "no poison reached the canary"
    assert all(o.body == 2 for o in failed), [o for o in failed if o.body != 2][:5]
    assert {o.version for o in outcomes if o.ok} == {"v1", "faulty"}
    assert not [o for o in outcomes[after_abort:] if not o.ok], "failures after the abort"
    assert all(o.version == "v1" for o in outcomes[after_abort:] if o.ok)
    poison = [o for o in outcomes if o.body == 2]
    assert len(failed) / len(poison) < 0.75  # at most the canary's share of the poison
    # What the user reads: the numbers against the threshold, and the spec untouched.
    message = md["status"]["rollout"]["failureMessage"]
    assert "analysis failed at canary step 1/1: success" in message and "< 99%" in message
    assert condition(md, "Degraded")["reason"] == "AnalysisFailed"
    assert md["spec"]["model"]["version"] == "faulty" and md["status"]["currentVersion"] == "v1"
    assert md["status"]["history"][0]["outcome"] == "RolledBack"
    assert "success" in md["status"]["history"][0]["message"]
    assert any("success" in m for m in _event_messages(real_node, node_ns, "AnalysisFailed"))
    # Two failed intervals of 10 s, after the canary pod's start: well within 2 minutes.
    assert aborted_after < 150, aborted_after
    print(f"aborted {aborted_after:.0f}s after the change: {message}")
    if os.environ.get(TIMELINE_ENV):
        Path(os.environ[TIMELINE_ENV]).write_text(json.dumps({
            "commit": commit(), "measured": time.strftime("%Y-%m-%d"),
            "changed_at_s": round(changed_at, 1),
            "aborted_after_s": round(aborted_after, 1), "message": message,
            "rules": rules, "timeline": _timeline(outcomes, "v1"),
        }, indent=1) + "\n")  # fmt: skip


def test_a_slower_canary_is_aborted_on_the_p99_rule(
    real_node: Cluster, images: Images, test_models: ModelStore, node_ns: str, operator: Any
) -> None:
    rules = {"interval": "10s", "minRequests": 20, "maxP99LatencyRatio": 3, "failureLimit": 1}
    url = _start(real_node, node_ns, images, test_models, _canary(rules, 50))
    slow = node_md("tiny", images, test_models.uri("slow"), "slow", 2, rollout=_canary(rules, 50))
    with ClosedLoop(url, clients=3, max_seconds=240, fresh=True) as load:
        time.sleep(2)
        real_node.apply(slow, node_ns)
        md = wait_for(lambda: _rolled_back(real_node, node_ns), "the slow canary aborted",
                      timeout=180, interval=1)  # fmt: skip
    figures = load.figures()
    assert figures["failures"] == 0, figures
    message = md["status"]["rollout"]["failureMessage"]
    assert "x stable's" in message and "> 3x" in message, message
    analysis = md["status"]["rollout"]["analysis"]
    assert analysis["figures"]["p99Ms"] > 3 * analysis["figures"]["stableP99Ms"], analysis
    print(message)


def _scrape_block(ip: str, port: int, on: bool) -> None:
    """Reset every GET /metrics to a pod (the operator's scrapes) and nothing else: the
    kubelet's probes and the Service's inference requests still reach it."""
    rule = ["OUTPUT", "-d", ip, "-p", "tcp", "--dport", str(port), "-m", "string",
            "--algo", "bm", "--string", "GET /metrics", "-j", "REJECT",
            "--reject-with", "tcp-reset"]  # fmt: skip
    subprocess.run(["iptables", "-I" if on else "-D", *rule], check=True)


@pytest.fixture
def scrape_fault() -> Iterator[list[str]]:
    blocked: list[str] = []
    yield blocked
    for ip in blocked:
        _scrape_block(ip, 8080, on=False)


def _analysis(cluster: Cluster, ns: str) -> dict[str, Any]:
    status = _md(cluster, ns).get("status", {})
    analysis: dict[str, Any] = status.get("rollout", {}).get("analysis", {})
    return analysis


def test_a_healthy_canary_waits_for_traffic_holds_on_a_scrape_failure_then_is_promoted(
    real_node: Cluster, images: Images, test_models: ModelStore, node_ns: str, operator: Any,
    scrape_fault: list[str],
) -> None:  # fmt: skip
    rules = {"interval": "8s", "minRequests": 20, "minSuccessRate": 99, "maxP99Latency": "2s"}
    url = _start(real_node, node_ns, images, test_models, _canary(rules, 50, 100))
    real_node.apply(
        node_md("tiny", images, test_models.uri("v2"), "v2", 2, rollout=_canary(rules, 50, 100)),
        node_ns,
    )
    # 1. No traffic: the analysis waits and says so; the step does not pass.
    no_data = wait_for(
        lambda: (a := _analysis(real_node, node_ns)).get("verdict") == "NoData" and a,
        "the analysis to report too few requests", timeout=180, interval=1,
    )  # fmt: skip
    assert "requests < 20 needed to judge" in no_data["message"]
    md = _md(real_node, node_ns)
    assert md["status"]["rollout"]["step"] == 0 and condition(md, "Ready")["status"] == "False"
    # 2. Traffic, but the canary pod's metrics cannot be read: no data, never a pass.
    canary_pod = pods(real_node, node_ns, "app.kubernetes.io/version=v2")[0]
    ip = canary_pod["status"]["podIP"]
    _scrape_block(ip, 8080, on=True)
    scrape_fault.append(ip)
    with ClosedLoop(url, clients=2, max_seconds=240, fresh=True) as load:
        blocked = wait_for(
            lambda: "GET /metrics failed" in (a := _analysis(real_node, node_ns)).get(
                "message", "") and a,
            "the analysis to report the failed scrape", timeout=60, interval=1,
        )  # fmt: skip
        assert blocked["verdict"] == "NoData"
        time.sleep(10)
        assert _md(real_node, node_ns)["status"]["rollout"]["step"] == 0
        # 3. The scrape path back: the analysis alone promotes through both steps.
        _scrape_block(ip, 8080, on=False)
        scrape_fault.remove(ip)
        md = wait_for(
            lambda: (m := _md(real_node, node_ns))["status"].get("currentVersion") == "v2"
            and condition(m, "Ready").get("reason") == "AllReplicasReady" and m,
            "v2 promoted by analysis", timeout=240, interval=1,
        )  # fmt: skip
    figures = load.figures()
    assert figures["failures"] == 0, (figures, figures["errors"])
    assert "modelplane.io/promote" not in md["metadata"].get("annotations", {})
    passed = _event_messages(real_node, node_ns, "CanaryStepComplete")
    assert sum("analysis passed" in m for m in passed) == 2, passed


def test_replicas_follow_in_flight_load_up_and_down_after_the_window(
    real_node: Cluster, images: Images, test_models: ModelStore, node_ns: str, operator: Any
) -> None:
    """The slow model keeps requests in flight: 1 client needs 1 replica, 5 need 3."""
    autoscaling = {"minReplicas": 1, "maxReplicas": 3, "targetInFlight": 2,
                   "scaleUpStabilization": "0s", "scaleDownStabilization": "20s"}  # fmt: skip
    real_node.apply(
        node_md("tiny", images, test_models.uri("slow"), "slow", 1, autoscaling=autoscaling),
        node_ns,
    )
    wait_ready(real_node, node_ns, "tiny", timeout=300)
    url = f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80"

    def scaled(n: int) -> dict[str, Any] | None:
        md = _md(real_node, node_ns)
        a = md["status"].get("autoscaling", {})
        return md if a.get("replicas") == n and md["status"].get("readyReplicas") == n else None

    with ClosedLoop(url, clients=1, max_seconds=300, fresh=True):
        time.sleep(15)
        md = _md(real_node, node_ns)
        assert md["status"]["autoscaling"]["replicas"] == 1, md["status"]["autoscaling"]
    with ClosedLoop(url, clients=5, max_seconds=300, fresh=True) as load:
        up_started = time.monotonic()
        md = wait_for(lambda: scaled(3), "3 replicas under 5 clients", timeout=180, interval=1)
        up_after = time.monotonic() - up_started
    assert load.figures()["failures"] == 0
    assert md["spec"]["replicas"] == 1, "the operator never writes spec"
    assert md["status"]["autoscaling"]["reason"] in ("ScaledUp", "AtTarget")
    stopped = time.monotonic()
    wait_for(lambda: scaled(1), "back to 1 replica after the load", timeout=180, interval=1)
    down_after = time.monotonic() - stopped
    # The window runs from the last high reading, which the operator takes every
    # AUTOSCALE_PERIOD_S: it may precede the end of the load by up to one period.
    floor = 20 - AUTOSCALE_PERIOD_S
    assert down_after >= floor, f"scaled down {down_after:.0f}s after the load: inside the window"
    assert any("-> 3" in m for m in _event_messages(real_node, node_ns, "Scaled"))
    print(f"scaled up in {up_after:.0f}s, down {down_after:.0f}s after the load stopped")


STAND_IN_GPU = "example.com/gpu"  # no device plugin serves it: the kubelet only counts it


@pytest.fixture
def two_stand_in_gpus(real_node: Cluster) -> Iterator[None]:
    """node-0 advertises two of a GPU-like extended resource, as Kubernetes documents for
    a node's own devices; the runtime computes on CPU (MODELPLANE_DEVICE in runtime.env)."""
    path = "/status/capacity/" + STAND_IN_GPU.replace("/", "~1")

    def patch(op: dict[str, Any]) -> None:
        real_node.kubectl("patch", "node", "node-0", "--subresource=status", "--type=json",
                          "-p", json.dumps([op]))  # fmt: skip

    def allocatable() -> str | None:
        node = real_node.get_json("node", "node-0")
        value: str | None = node["status"].get("allocatable", {}).get(STAND_IN_GPU)
        return value

    patch({"op": "add", "path": path, "value": "2"})
    try:
        wait_for(lambda: allocatable() == "2", "node-0 allocatable example.com/gpu", timeout=60)
        yield
    finally:
        patch({"op": "remove", "path": path})
        wait_for(lambda: allocatable() is None, "the stand-in GPUs gone", timeout=60)


def test_scaling_stops_at_the_free_gpus_and_says_so(
    real_node: Cluster, images: Images, test_models: ModelStore, node_ns: str, operator: Any,
    two_stand_in_gpus: None,
) -> None:  # fmt: skip
    """12 clients of the slow model ask for 4 replicas (of at most 4, one in flight each);
    node-0 has GPUs for 2. The operator scales to 2, never leaves a pod Pending, and status
    and an event say why. Twice the clients the target needs: on a busy 2-core machine,
    closed-loop clients keep fewer requests in flight than there are clients."""
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetInFlight": 1,
                   "scaleUpStabilization": "0s", "scaleDownStabilization": "60s"}  # fmt: skip
    runtime = {"gpu": {"count": 1, "resource": STAND_IN_GPU},
               "env": [{"name": "MODELPLANE_DEVICE", "value": "cpu"}]}  # fmt: skip
    real_node.apply(
        node_md("tiny", images, test_models.uri("slow"), "slow", 1,
                autoscaling=autoscaling, runtime=runtime),
        node_ns,
    )  # fmt: skip
    wait_ready(real_node, node_ns, "tiny", timeout=300)
    url = f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80"

    pending_seen: list[str] = []

    def note_pending() -> None:
        for pod in pods(real_node, node_ns):
            if pod["status"].get("phase") == "Pending" and not pod["spec"].get("nodeName"):
                pending_seen.append(pod["metadata"]["name"])

    def limited() -> dict[str, Any] | None:
        note_pending()
        md = _md(real_node, node_ns)
        a = md["status"].get("autoscaling", {})
        at_limit = a.get("reason") == "ScaleLimitedByGPU" and a.get("replicas") == 2
        return md if at_limit and md["status"].get("readyReplicas") == 2 else None

    with ClosedLoop(url, clients=12, max_seconds=300, fresh=True) as load:
        md = wait_for(limited, "2 replicas, limited by the free GPUs", timeout=180, interval=1)
        held_until = time.monotonic() + 3 * AUTOSCALE_PERIOD_S
        while time.monotonic() < held_until:  # the load still asks for 4: nothing moves
            note_pending()
            time.sleep(1)
        md = _md(real_node, node_ns)
    assert load.figures()["failures"] == 0
    a = md["status"]["autoscaling"]
    assert (a["replicas"], a["desiredReplicas"], a["reason"]) == (2, 4, "ScaleLimitedByGPU"), a
    assert "the free GPUs allow 2" in a["message"], a["message"]
    assert not pending_seen, f"pods left Pending for GPUs: {sorted(set(pending_seen))}"
    assert md["spec"]["replicas"] == 1, "the operator never writes spec"
    deployments = real_node.get_json("deployments", "-n", node_ns)["items"]
    assert [d["spec"]["replicas"] for d in deployments] == [2]
    limited_events = _event_messages(real_node, node_ns, "ScaleLimitedByGPU")
    assert any("asks for 4 replicas" in m for m in limited_events), limited_events
