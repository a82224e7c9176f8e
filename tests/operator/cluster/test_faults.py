"""Faults: the operator SIGKILLed at random points, the kube-apiserver restarted under it.

A few iterations in CI; `make reliability` (MODELPLANE_SOAK=1) runs the soak counts and
writes the figures to docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import signal
import time
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from mdkit import condition, get, model_deployment, wait_serving
from reliabilitykit import Recorder, iterations

pytestmark = pytest.mark.reliability("Faults")

NAMES = ("alpha", "bravo", "charlie")
STRATEGIES = (
    {"strategy": "RollingUpdate", "progressDeadlineSeconds": 10},
    {"strategy": "Recreate", "progressDeadlineSeconds": 10},
    {
        "strategy": "Canary",
        "progressDeadlineSeconds": 10,
        "canary": {"steps": [{"weight": 50, "pause": {"duration": "1s"}}]},
    },
)


def _patch(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "md", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def _version(n: int, name: str, failing: bool = False) -> dict[str, Any]:
    # A merge patch: null removes the failure label a previous round may have set.
    labels = {"sim.modelplane.io/fail": "crash" if failing else None}
    return {
        "model": {"version": f"{n}.0.0", "uri": f"s3://models/{name}/{n}.0.0"},
        "pod": {"labels": labels},
    }


def _owned_children_are_consistent(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """No orphans or duplicates: every child is owned, one Deployment per template."""
    md = get(cluster, "md", name, namespace)
    assert md is not None
    uid = md["metadata"]["uid"]
    deployments = cluster.get_json(
        "deployments", "-n", namespace, "-l", f"modelplane.io/deployment={name}"
    )["items"]
    for d in deployments:
        owners = [o["uid"] for o in d["metadata"].get("ownerReferences", [])]
        assert owners == [uid], f"{d['metadata']['name']} is not owned by md/{name}"
    revisions = [d["metadata"]["labels"]["modelplane.io/revision"] for d in deployments]
    assert len(revisions) == len(set(revisions)), f"duplicate revisions {revisions}"
    hashes = [d["metadata"]["annotations"].get("modelplane.io/template-hash") for d in deployments]
    assert len(hashes) == len(set(hashes)), f"two revisions share a template: {hashes}"
    limit = md["spec"].get("revisionHistoryLimit", 3)
    assert len(deployments) <= limit + 1 + 1  # kept history, the serving one, the target
    history = [h["revision"] for h in md["status"].get("history", [])]
    assert all(isinstance(r, int) and r > 0 for r in history)
    services = cluster.get_json(
        "services", "-n", namespace, "-l", f"modelplane.io/deployment={name}"
    )["items"]
    assert len(services) == 1 and services[0]["metadata"]["ownerReferences"][0]["uid"] == uid
    return md


def _mid_rollout(md: dict[str, Any] | None) -> bool:
    """The spec's version is not yet serving every replica, nor given up on."""
    if md is None:
        return False
    reason = condition(md, "Ready").get("reason")
    return md["status"].get("observedGeneration") != md["metadata"]["generation"] or reason not in (
        "AllReplicasReady",
        "RolledBack",
    )


def test_operator_sigkilled_at_random_points_always_converges(
    cluster: Cluster, namespace: str, operator: Any, reliability: Recorder
) -> None:
    """SIGKILL at random points during rollouts: converges, no orphans or duplicates."""
    rounds = iterations(ci=3, soak=25)
    rng = random.Random(20261124)
    for i, name in enumerate(NAMES):
        rollout = STRATEGIES[i % len(STRATEGIES)]
        cluster.apply(
            model_deployment(name, replicas=2, rollout=rollout, revisionHistoryLimit=2), namespace
        )
    for name in NAMES:
        wait_serving(cluster, namespace, name, "1.0.0")

    versions = dict.fromkeys(NAMES, 1)
    kills_mid_rollout = 0
    try:
        for round_ in range(rounds):
            for name in NAMES:
                versions[name] += 1
                failing = rng.random() < 0.2
                _patch(cluster, namespace, name, _version(versions[name], name, failing))
            time.sleep(rng.uniform(0.0, 1.5))
            busy = any(_mid_rollout(get(cluster, "md", n, namespace)) for n in NAMES)
            kills_mid_rollout += busy
            operator.stop(signal.SIGKILL)
            if rng.random() < 0.5:  # the world moves on while the operator is down
                name = rng.choice(NAMES)
                _patch(cluster, namespace, name, {"replicas": rng.choice([1, 2, 3])})
            operator.start()
            reliability.record("kills survived", round_ + 1)
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()

    # One last good version everywhere, then every object must serve it, tidy.
    for name in NAMES:
        versions[name] += 1
        _patch(cluster, namespace, name, _version(versions[name], name))
    for name in NAMES:
        wait_serving(cluster, namespace, name, f"{versions[name]}.0.0", timeout=120)
        md = _owned_children_are_consistent(cluster, namespace, name)
        assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
        pods = cluster.get_json("pods", "-n", namespace, "-l", f"modelplane.io/deployment={name}")[
            "items"
        ]
        serving = md["status"]["history"][0]["revision"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        wait_for(
            lambda name=name, serving=serving: all(
                p["metadata"]["labels"]["modelplane.io/revision"] == str(serving)
                for p in cluster.get_json(
                    "pods", "-n", namespace, "-l", f"modelplane.io/deployment={name}"
                )["items"]
            ),
            f"only revision {serving} pods of {name}",
        )
        assert len(live) >= md["spec"]["replicas"]
    reliability.record("objects", len(NAMES))
    reliability.record("kills while a rollout was in progress", kills_mid_rollout)
    # Each kill follows a version change by at most 1.5 s, so most land mid-rollout; at
    # least one must, or the test showed nothing about crash recovery mid-rollout.
    assert kills_mid_rollout >= 1, f"no kill of {rounds} landed while a rollout was in progress"


def test_apiserver_restart_is_survived_without_an_operator_restart(
    cluster: Cluster, namespace: str, operator: Any, reliability: Recorder
) -> None:
    """kube-apiserver restarted during reconciles: same operator process, no lost update."""
    if cluster.local is None:
        pytest.skip("restarts a component of the local control plane")
    rounds = iterations(ci=2, soak=10)
    cluster.apply(model_deployment("steady", replicas=2), namespace)
    wait_serving(cluster, namespace, "steady", "1.0.0")
    assert operator.proc is not None
    pid = operator.proc.pid
    for round_ in range(rounds):
        version = round_ + 2
        # Changed just before the restart: the operator is mid-reconcile when it goes down.
        _patch(cluster, namespace, "steady", _version(version, "steady"))
        cluster.local.restart_component("kube-apiserver", down_s=2.0)
        # And changed right after: the operator's watch must come back to see it.
        replicas = 3 if round_ % 2 == 0 else 2
        _patch(cluster, namespace, "steady", {"replicas": replicas})
        md = wait_serving(cluster, namespace, "steady", f"{version}.0.0", timeout=120)
        md = wait_for(
            lambda replicas=replicas: (
                m
                if (m := get(cluster, "md", "steady", namespace))
                and m["status"].get("readyReplicas") == replicas
                and m["status"].get("observedGeneration") == m["metadata"]["generation"]
                else None
            ),
            f"{replicas} ready replicas after the restart",
            timeout=90,
        )
        assert md["status"]["currentVersion"] == f"{version}.0.0"
        assert operator.proc.pid == pid and operator.proc.poll() is None, "operator restarted"
        reliability.record("apiserver restarts survived", round_ + 1)
    _owned_children_are_consistent(cluster, namespace, "steady")
