"""Canary analysis: interval figures from two scrapes per pod, quantiles from buckets,
verdicts against the rules, and what the planner does with them."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rollout_planner import deployed, spec

from modelplane_operator.analysis import Figures, Snapshot, Verdict, figures, judge
from modelplane_operator.metering import CanaryReading, Interval
from modelplane_operator.podmetrics import PodSample, bucket_quantile, parse_sample
from modelplane_operator.rollout import Memory
from modelplane_operator.spec import Analysis

BOUNDS = (0.001, 0.01, 0.1, 1.0, math.inf)
RULES = Analysis(interval_s=30, min_requests=20, min_success_rate=99.0, failure_limit=2)


def sample(
    pod: str,
    ok: float,
    errors: float = 0,
    started: float = 0.0,
    at: float = 0.0,
    latencies: tuple[float, ...] = (),
    client: float = 0,
) -> PodSample:
    buckets = {b: float(sum(1 for x in latencies if x <= b)) for b in BOUNDS}
    if not latencies:
        buckets = {b: ok if b >= 0.01 else 0.0 for b in BOUNDS}
    return PodSample(pod, started, at, ok, errors, client, buckets)


def test_the_runtimes_exposition_parses_into_a_sample() -> None:
    text = (
        "# TYPE modelplane_requests_total counter\n"
        'modelplane_requests_total{model="m",outcome="success",version="1"} 7.0\n'
        'modelplane_requests_total{model="m",outcome="server_error",version="1"} 2.0\n'
        'modelplane_requests_total{model="m",outcome="client_error",version="1"} 3.0\n'
        "# TYPE modelplane_request_duration_seconds histogram\n"
        'modelplane_request_duration_seconds_bucket{le="0.01",model="m",version="1"} 5.0\n'
        'modelplane_request_duration_seconds_bucket{le="+Inf",model="m",version="1"} 7.0\n'
        'modelplane_request_duration_seconds_count{model="m",version="1"} 7.0\n'
        "# TYPE modelplane_requests_in_flight gauge\n"
        'modelplane_requests_in_flight{model="m",version="1"} 4.0\n'
    )
    got = parse_sample(text, "p", 1.0, 2.0)
    assert (got.successes, got.server_errors, got.client_errors, got.in_flight) == (7, 2, 3, 4)
    assert got.buckets == {0.01: 5.0, math.inf: 7.0}
    with pytest.raises(ValueError, match=r"none of the modelplane server.s request metrics"):
        parse_sample("# TYPE other gauge\nother 1\n", "p", 1.0, 2.0)


def test_quantiles_interpolate_inside_buckets_like_prometheus() -> None:
    # 100 requests: 90 at most 10 ms, 10 between 10 ms and 100 ms.
    buckets = {0.01: 90.0, 0.1: 100.0, math.inf: 100.0}
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.01 * 50 / 90)
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.01 + 0.09 * 9 / 10)
    assert bucket_quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    # Beyond the highest finite bound, the bound is all that is known.
    assert bucket_quantile(0.99, {0.1: 0.0, math.inf: 5.0}) == 0.1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0.0005, 0.005, 0.05, 0.5, 5.0]), min_size=1, max_size=300),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_a_quantile_lies_in_the_bucket_that_holds_it(latencies: list[float], q: float) -> None:
    s = sample("p", len(latencies), latencies=tuple(latencies))
    got = bucket_quantile(q, s.buckets)
    exact = sorted(latencies)[max(0, math.ceil(q * len(latencies)) - 1)]
    upper = min(b for b in BOUNDS if b >= exact)
    lower = max([0.0, *(b for b in BOUNDS if b < exact)])
    assert got is not None and lower <= got <= min(upper, 1.0)


def test_deltas_cope_with_resets_restarts_new_and_missing_pods() -> None:
    start = Snapshot(
        100.0,
        {
            "same": sample("same", 50, 1, started=10),
            "reset": sample("reset", 80, started=10),
            "restarted": sample("restarted", 70, started=10),
            "gone": sample("gone", 10, started=10),
        },
        {"unscraped": "timeout"},
    )
    end = Snapshot(
        130.0,
        {
            "same": sample("same", 90, 3, started=10),
            "reset": sample("reset", 5, started=10),  # went down: counts from zero
            "restarted": sample("restarted", 12, started=115),  # a new process in the interval
            "new": sample("new", 20, started=50),  # was not ready at the start: no traffic then
            "unscraped": sample("unscraped", 99, started=10),  # ready at the start, unread then
        },
        {},
    )
    got = figures(start, end)
    assert got.successes == 40 + 5 + 12 + 20 and got.server_errors == 2
    assert set(got.measured) == {"same", "reset", "restarted", "new"}
    assert set(got.unmeasured) == {"gone", "unscraped"}
    assert got.unmeasured["unscraped"] == "timeout"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 5), st.booleans()), min_size=2, max_size=12
    )
)
def test_contiguous_intervals_add_up_to_what_was_served(steps: list[tuple[int, int, bool]]) -> None:
    """Across restarts, the intervals' successes sum to every request served after the
    first scrape (a restart between scrapes loses nothing: it counts from zero)."""
    served_total, ok, started, snaps = 0, 0.0, 0.0, []
    for i, (new_ok, _errors, restart) in enumerate(steps):
        if restart and i:
            ok, started = 0.0, float(i) - 0.5
        ok += new_ok
        if i:
            served_total += new_ok
        snaps.append(Snapshot(float(i), {"p": sample("p", ok, 0, started=started)}))
    summed = sum(figures(a, b).successes for a, b in itertools.pairwise(snaps))
    assert summed == served_total


def test_verdicts_name_the_figures_against_the_thresholds() -> None:
    bad = Figures(
        successes=1131, server_errors=109, buckets={1.0: 1131.0, math.inf: 1131.0}, measured=("c",)
    )
    j = judge(bad, Figures(), RULES)
    assert j.verdict is Verdict.FAIL and j.message == "success 91.2% < 99% over 1,240 requests"
    few = Figures(successes=12, client_errors=500, measured=("c",))
    assert judge(few, Figures(), RULES).verdict is Verdict.NO_DATA  # 4xx do not count
    assert "12 requests < 20" in judge(few, Figures(), RULES).message
    unread = Figures(successes=500, unmeasured={"c-2": "GET /metrics failed: timeout"})
    assert judge(unread, Figures(), RULES).verdict is Verdict.NO_DATA
    good = Figures(successes=999, server_errors=1, buckets={0.01: 999.0, math.inf: 999.0})
    assert judge(good, Figures(), RULES).verdict is Verdict.PASS


def test_latency_rules_absolute_and_relative_to_stable() -> None:
    slow = Figures(successes=100, buckets={0.01: 0.0, 0.1: 100.0, math.inf: 100.0})
    fast = Figures(successes=300, buckets={0.01: 300.0, 0.1: 300.0, math.inf: 300.0})
    ratio = Analysis(min_requests=20, max_p99_ratio=2.0)
    j = judge(slow, fast, ratio)
    assert j.verdict is Verdict.FAIL and "x stable's" in j.message and "> 2x" in j.message
    assert judge(fast, fast, ratio).verdict is Verdict.PASS
    assert judge(fast, Figures(), ratio).verdict is Verdict.NO_DATA  # no stable p99 to compare
    absolute = Analysis(min_requests=20, max_p99_s=0.05)
    assert judge(slow, fast, absolute).verdict is Verdict.FAIL
    assert judge(fast, fast, absolute).verdict is Verdict.PASS


def _interval(sim_now: float, ok: float, errors: float) -> Interval:
    canary = Figures(
        successes=ok, server_errors=errors, buckets={0.01: ok, math.inf: ok}, measured=("c",)
    )
    stable = Figures(successes=3 * ok, buckets={0.01: 3 * ok, math.inf: 3 * ok})
    return Interval(sim_now - 30, sim_now, canary, stable)


ANALYSED = {
    "steps": [{"weight": 25, "pause": {}}, {"weight": 50, "pause": {}}],
    "analysis": {"interval": "30s", "minRequests": 20, "minSuccessRate": 99, "failureLimit": 2},
}


def _to_step(sim, n: int = 10):  # type: ignore[no-untyped-def]
    p = None
    for _ in range(n):
        p = sim.step("v2", "2.0.0")
    return p


def test_a_failing_canary_is_aborted_after_the_failure_limit_and_stable_restored() -> None:
    sim = deployed(spec(strategy="Canary", canary=ANALYSED))
    p = _to_step(sim)
    assert p.phase == "Paused" and p.reason == "CanaryAnalysing"
    assert (sim.revisions[2].ready, sim.revisions[1].replicas) == (1, 3)
    key = (2, 1, 0)
    sim.now += 40.7  # a scrape's time has a fraction of a second; status must keep it
    sim.analysis = CanaryReading(key, sim.now, _interval(sim.now, 90, 10))
    p = sim.step("v2", "2.0.0")
    assert p.phase == "Paused" and "Failed: success 90.0% < 99%" in p.message
    assert p.memory.analysis is not None and p.memory.analysis.failed == 1
    p = sim.step("v2", "2.0.0")  # the same interval again: judged once only
    assert p.memory.analysis is not None and p.memory.analysis.failed == 1
    # Also once the memory has been through status, as the operator reads it back.
    sim.memory = Memory.from_status(sim.memory.to_status())
    p = sim.step("v2", "2.0.0")
    assert p.memory.analysis is not None and p.memory.analysis.failed == 1
    sim.now += 30
    sim.analysis = CanaryReading(key, sim.now, _interval(sim.now, 80, 20))
    p = sim.step("v2", "2.0.0")
    assert p.reason == "AnalysisFailed" and p.memory.failure_reason == "AnalysisFailed"
    assert "success 80.0% < 99% over 100 requests" in p.memory.failure_message
    assert any(e.reason == "AnalysisFailed" for e in p.events)
    assert p.history[0]["outcome"] == "RolledBack"
    final = sim.run("v2", "2.0.0")
    assert final.phase == "RolledBack" and final.reason == "AnalysisFailed"
    assert sim.revisions[1].ready == 4 and sim.revisions[2].replicas == 0


def test_a_healthy_canary_advances_by_analysis_alone_and_waits_without_data() -> None:
    sim = deployed(spec(strategy="Canary", canary=ANALYSED))
    _to_step(sim)
    sim.now += 40
    few = _interval(sim.now, 5, 0)
    sim.analysis = CanaryReading((2, 1, 0), sim.now, few)
    p = sim.step("v2", "2.0.0")
    assert p.phase == "Paused" and "NoData: 5 requests < 20 needed to judge" in p.message
    sim.now += 30
    sim.analysis = CanaryReading((2, 1, 0), sim.now, _interval(sim.now, 500, 0))
    p = sim.step("v2", "2.0.0")
    assert any(
        e.reason == "CanaryStepComplete" and "analysis passed" in e.message for e in p.events
    )
    p = _to_step(sim)
    assert (sim.revisions[2].ready, sim.revisions[1].replicas) == (2, 2)
    sim.now += 40
    sim.analysis = CanaryReading((2, 1, 1), sim.now, _interval(sim.now, 500, 0))
    final = sim.run("v2", "2.0.0")
    assert final.phase == "Succeeded" and sim.revisions[2].ready == 4


def test_an_interval_measured_before_the_step_was_in_place_is_not_judged() -> None:
    sim = deployed(spec(strategy="Canary", canary=ANALYSED))
    _to_step(sim)
    early = Interval(sim.now - 100, sim.now - 50, *(_interval(0, 500, 0).canary,) * 2)
    sim.analysis = CanaryReading((2, 1, 0), sim.now, early)
    p = sim.step("v2", "2.0.0")
    assert p.phase == "Paused" and p.memory.step == 0 and p.requeue_after is not None
