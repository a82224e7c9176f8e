"""The rollout planner, driven through whole rollouts against a simulated cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from factories import md_body
from modelplane_operator.metering import CanaryReading
from modelplane_operator.revisions import Revision
from modelplane_operator.rollout import (
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    Memory,
    Plan,
    plan,
)
from modelplane_operator.spec import ModelDeploymentSpec, parse

META = {"version": "2.0.0", "uri": "s3://m/2", "image": "img"}


def crash_pod() -> dict[str, Any]:
    return {
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "restartCount": 5,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "boom"}},
                }
            ]
        }
    }


class Sim:
    """Revisions whose pods become ready (or crash) as soon as they are asked for.

    GPUs are a fixed pool: a pod exists only while a GPU is free for it.
    """

    def __init__(self, md: ModelDeploymentSpec, gpus: int, broken: set[str] | None = None) -> None:
        self.md = md
        self.gpus = gpus
        self.broken = broken or set()
        self.revisions: dict[int, Revision] = {}
        self.memory = Memory()
        self.history: list[dict[str, Any]] = []
        self.annotations: dict[str, str] = {}
        self.now = 1_000_000.0
        self.min_ready_seen: int | None = None
        self.max_pods_seen = 0
        self.analysis: CanaryReading | None = None  # what the canary's pods measured

    def pods(self) -> int:
        return sum(r.pods for r in self.revisions.values())

    def step(self, desired_hash: str, version: str) -> Plan:
        p = plan(
            self.md,
            desired_hash,
            self.revisions,
            self.memory,
            self.history,
            self.annotations,
            lambda: max(0, self.gpus - self.pods()),
            self.now,
            {**META, "version": version},
            self.analysis,
        )
        self.memory, self.history = p.memory, p.history
        if p.create_target:
            self.revisions[p.target] = Revision(p.target, desired_hash, version, "", "", 0, 0, 0)
        for number, replicas in p.replicas.items():
            rev = self.revisions[number]
            self.revisions[number] = replace(rev, replicas=replicas)
        for number in p.delete:
            del self.revisions[number]
        # The "cluster" reacts: pods go first (freeing GPUs), then start where GPUs are free.
        for number, rev in list(self.revisions.items()):
            if rev.pods > rev.replicas:
                self.revisions[number] = replace(
                    rev,
                    pods=rev.replicas,
                    ready=min(rev.ready, rev.replicas),
                    pod_objects=rev.pod_objects[: rev.replicas],
                )
        for number, rev in list(self.revisions.items()):
            if rev.pods < rev.replicas:
                start = min(rev.replicas - rev.pods, max(0, self.gpus - self.pods()))
                bad = rev.hash in self.broken
                pods = rev.pods + start
                self.revisions[number] = replace(
                    rev,
                    pods=pods,
                    ready=rev.ready if bad else rev.ready + start,
                    pod_objects=tuple(crash_pod() for _ in range(pods)) if bad else (),
                )
        ready = sum(r.ready for r in self.revisions.values())
        self.max_pods_seen = max(self.max_pods_seen, self.pods())
        self.min_ready_seen = (
            ready if self.min_ready_seen is None else min(self.min_ready_seen, ready)
        )
        self.now += 1
        return p

    def run(self, desired_hash: str, version: str, limit: int = 200) -> Plan:
        for _ in range(limit):
            p = self.step(desired_hash, version)
            if p.phase in ("Succeeded", "RolledBack") and not p.create_target:
                settled = self.step(desired_hash, version)
                if settled.replicas == p.replicas:
                    return settled
        raise AssertionError(f"did not settle: {p}")


def spec(**rollout: Any) -> ModelDeploymentSpec:
    body = md_body(rollout=rollout)
    body["spec"]["replicas"] = rollout.pop("replicas", 4) if "replicas" in rollout else 4
    return parse(body)


def deployed(md: ModelDeploymentSpec, gpus: int = 100) -> Sim:
    sim = Sim(md, gpus)
    done = sim.run("v1", "1.0.0")
    assert done.phase == "Succeeded" and sim.revisions[1].ready == md.replicas
    sim.min_ready_seen = None
    sim.max_pods_seen = 0
    return sim


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(min_value=1, max_value=8),
    surge=st.integers(min_value=0, max_value=3),
    unavailable=st.integers(min_value=0, max_value=3),
)
def test_rolling_update_keeps_capacity_and_surge_bounds(
    replicas: int, surge: int, unavailable: int
) -> None:
    if surge == 0 and unavailable == 0:
        surge = 1
    body = md_body(rollout={"maxSurge": surge, "maxUnavailable": unavailable})
    body["spec"]["replicas"] = replicas
    md = parse(body)
    sim = deployed(md)
    final = sim.run("v2", "2.0.0")
    assert final.phase == "Succeeded" and final.serving == 2
    assert sim.revisions[2].ready == replicas and sim.revisions[1].replicas == 0
    assert sim.min_ready_seen is not None
    assert sim.min_ready_seen >= replicas - unavailable
    assert sim.max_pods_seen <= replicas + surge


def test_full_gpu_cluster_replaces_one_pod_at_a_time_without_extra_gpus() -> None:
    md = spec(maxSurge=1, maxUnavailable=0)
    sim = deployed(md, gpus=4)  # 4 replicas x 1 GPU: not a single GPU to spare
    plans = [sim.step("v2", "2.0.0") for _ in range(3)]
    assert any(e.reason == "GPUConstrained" for p in plans for e in p.events)
    final = sim.run("v2", "2.0.0")
    assert final.phase == "Succeeded"
    assert sim.max_pods_seen <= 4
    assert sim.min_ready_seen == 3  # one pod at a time, never more


def test_failing_version_rolls_back_and_does_not_retry_until_asked() -> None:
    md = spec()
    sim = deployed(md)
    sim.broken = {"v2"}
    final = sim.run("v2", "2.0.0")
    assert final.phase == "RolledBack" and final.serving == 1
    assert sim.revisions[1].ready == 4 and sim.revisions[2].replicas == 0
    assert sim.memory.failed == 2 and "boom" in sim.memory.failure_message
    assert sim.history[0]["revision"] == 2 and sim.history[0]["outcome"] == "RolledBack"
    for _ in range(5):  # no retry loop while the spec stays
        assert sim.step("v2", "2.0.0").replicas[2] == 0
    sim.broken = set()
    sim.annotations[RETRY_ANNOTATION] = "1"
    retried = sim.run("v2", "2.0.0")
    assert retried.phase == "Succeeded" and retried.serving == 2


def test_version_revert_reuses_the_kept_revision() -> None:
    md = spec()
    sim = deployed(md)
    sim.run("v2", "2.0.0")
    back = sim.run("v1", "1.0.0")
    assert back.target == 1 and back.serving == 1
    assert set(sim.revisions) == {1, 2}


def test_rollback_to_a_revision_number_and_unknown_numbers() -> None:
    sim = deployed(spec())
    sim.run("v2", "2.0.0")
    sim.md = spec(rollbackTo=1)
    back = sim.run("v2", "2.0.0")
    assert back.target == 1 and back.serving == 1 and sim.revisions[1].ready == 4
    sim.md = spec(rollbackTo=9)
    p = sim.step("v2", "2.0.0")
    assert p.error is not None and "not a kept revision" in p.error
    assert sim.revisions[1].replicas == 4


def test_canary_steps_show_as_pod_counts_and_wait_for_promotion() -> None:
    md = spec(
        strategy="Canary",
        canary={
            "steps": [{"weight": 25, "pause": {}}, {"weight": 50, "pause": {"duration": "30s"}}]
        },
    )
    sim = deployed(md)
    for _ in range(10):
        p = sim.step("v2", "2.0.0")
    assert p.phase == "Paused" and p.reason == "CanaryPaused"
    assert (sim.revisions[2].ready, sim.revisions[1].replicas) == (1, 3)
    sim.annotations[PROMOTE_ANNOTATION] = "step-1"
    for _ in range(10):
        p = sim.step("v2", "2.0.0")
    assert (sim.revisions[2].ready, sim.revisions[1].replicas) == (2, 2)
    assert p.reason == "CanaryPaused" and p.requeue_after is not None
    sim.now += 31
    final = sim.run("v2", "2.0.0")
    assert final.phase == "Succeeded" and sim.revisions[2].ready == 4


def test_paused_rollout_holds_replicas() -> None:
    sim = deployed(spec())
    sim.md = spec(paused=True)
    before = {n: r.replicas for n, r in sim.revisions.items()}
    p = sim.step("v2", "2.0.0")
    assert p.phase == "Paused"
    assert {n: r for n, r in p.replicas.items() if n in before} == before


def test_history_and_kept_revisions_stay_within_the_limit() -> None:
    md = spec()
    body = md_body()
    body["spec"]["revisionHistoryLimit"] = 2
    md = parse(body)
    sim = deployed(md)
    for n in range(2, 8):
        sim.run(f"v{n}", f"{n}.0.0")
    assert len(sim.revisions) <= 2 + 1
    assert len(sim.history) <= 2 + 2
    assert sim.history[0]["version"] == "7.0.0"


def test_recreate_stops_every_old_pod_before_starting_new_ones() -> None:
    sim = deployed(spec(strategy="Recreate"))
    p = sim.step("v2", "2.0.0")
    assert p.replicas[1] == 0 and p.replicas[2] == 0
    final = sim.run("v2", "2.0.0")
    assert final.phase == "Succeeded"
    assert sim.max_pods_seen <= 4


def test_deadline_without_progress_fails_and_rolls_back() -> None:
    md = spec()
    sim = deployed(md)
    sim.broken = {"v2"}
    sim.revisions = dict(sim.revisions)
    # Unready but not crashing: only the deadline can tell.
    crash = sim.broken
    sim.broken = set()
    p = sim.step("v2", "2.0.0")
    sim.revisions[2] = replace(sim.revisions[2], ready=0)
    sim.broken = crash
    sim.revisions[2] = replace(sim.revisions[2], pod_objects=())
    sim.now += md.rollout.progress_deadline_seconds + 5
    p = plan(md, "v2", sim.revisions, sim.memory, sim.history, {}, None, sim.now, META)
    assert p.memory.failed == 2 and p.memory.failure_reason == "ProgressDeadlineExceeded"
    assert p.phase in ("RollingBack", "RolledBack")


def test_going_back_to_a_revision_that_served_skips_canary_steps() -> None:
    md = spec(strategy="Canary", canary={"steps": [{"weight": 50, "pause": {}}]})
    sim = deployed(md)
    sim.annotations[PROMOTE_ANNOTATION] = "go"
    assert sim.run("v2", "2.0.0").serving == 2
    back = sim.run("v1", "1.0.0", limit=20)
    assert back.serving == 1 and sim.revisions[1].ready == 4


def test_resuming_a_paused_rollout_restarts_the_progress_clock() -> None:
    md = spec()
    sim = deployed(md)
    sim.md = spec(paused=True)
    assert sim.step("v2", "2.0.0").phase == "Paused"
    # Resumed long after the deadline, with the new pods still starting: that is no
    # failure yet, as a Deployment restarts its progress clock on resume.
    sim.now += md.rollout.progress_deadline_seconds * 6
    sim.md = md
    sim.gpus = sim.pods()  # no room: the new pods stay pending for a while
    for _ in range(3):
        p = sim.step("v2", "2.0.0")
        assert p.phase == "Progressing", (p.phase, p.reason, p.message)
    assert p.memory.failed is None


def test_a_revision_interrupted_in_its_canary_does_not_skip_it_later() -> None:
    md = spec(strategy="Canary", canary={"steps": [{"weight": 25, "pause": {}}]})
    sim = deployed(md)
    for _ in range(10):
        p = sim.step("v2", "2.0.0")
    assert p.reason == "CanaryPaused"
    for _ in range(3):
        sim.step("v3", "3.0.0")  # the user moves on before promoting 2.0.0
    outcomes = {h["revision"]: h["outcome"] for h in sim.history}
    assert outcomes[2] == "Interrupted"
    # Back to 2.0.0 (a git revert): it never passed its canary, so it starts one again.
    for _ in range(10):
        p = sim.step("v2", "2.0.0")
    assert p.reason == "CanaryPaused" and sim.revisions[2].replicas == 1


def test_history_covers_every_kept_revision_at_the_largest_limit() -> None:
    body = md_body()
    body["spec"]["revisionHistoryLimit"] = 50  # the CRD's maximum
    body["spec"]["replicas"] = 1
    sim = deployed(parse(body))
    for n in range(2, 40):
        sim.run(f"v{n}", f"{n}.0.0")
    recorded = {h["revision"] for h in sim.history}
    # Rollback and "served before" read the history: a kept revision must be in it.
    assert set(sim.revisions) <= recorded
