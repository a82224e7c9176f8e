"""Autoscaling arithmetic: recommendations, stabilisation windows, the GPU limit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane_operator.autoscale import Recommendation, ScaleReason, decide, recommend, stabilise
from modelplane_operator.spec import Autoscaling

RULES = Autoscaling(1, 6, 4.0, scale_up_window_s=0, scale_down_window_s=60)


def test_a_recommendation_is_in_flight_over_the_target_within_bounds() -> None:
    assert [recommend(x, RULES) for x in (0, 1, 4, 4.5, 8, 8.0000001, 100)] == [1, 1, 1, 2, 2, 2, 6]


def test_scale_down_waits_for_the_window_scale_up_does_not() -> None:
    history = [Recommendation(t, 4) for t in range(0, 50, 5)] + [Recommendation(55, 1)]
    assert stabilise(4, history, 55, RULES) == 4  # a 4 within the last 60 s holds it
    later = [*history, Recommendation(120, 1)]
    assert stabilise(4, [r for r in later if r.at >= 60], 120, RULES) == 1
    assert stabilise(1, [Recommendation(0, 1), Recommendation(5, 3)], 5, RULES) == 3


def test_a_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    rules = Autoscaling(1, 6, 4.0, scale_up_window_s=30, scale_down_window_s=60)
    history = [Recommendation(0, 2), Recommendation(10, 5), Recommendation(20, 6)]
    assert stabilise(1, history, 20, rules) == 2


def test_scaling_stops_at_the_free_gpus_and_says_so() -> None:
    history = [Recommendation(0, 6)]
    got = decide(2, history, 0, RULES, free_slots=1, in_flight=24)
    assert (got.replicas, got.desired, got.reason) == (3, 6, ScaleReason.GPU_LIMITED)
    assert "asks for 6 replicas; the free GPUs allow 3 (1 more)" in got.message
    assert decide(2, history, 0, RULES, free_slots=None, in_flight=24).replicas == 6
    down = decide(5, [Recommendation(0, 1)], 100, RULES, free_slots=0, in_flight=0)
    assert (down.replicas, down.reason) == (1, ScaleReason.DOWN)  # going down needs no GPU


@settings(max_examples=200, deadline=None)
@given(
    current=st.integers(1, 6),
    recs=st.lists(st.integers(1, 6), min_size=1, max_size=20),
    free=st.one_of(st.none(), st.integers(0, 6)),
)
def test_the_count_stays_within_bounds_and_never_exceeds_free_gpus(
    current: int, recs: list[int], free: int | None
) -> None:
    history = [Recommendation(float(i), r) for i, r in enumerate(recs)]
    got = decide(current, history, float(len(recs)), RULES, free, 0.0)
    assert RULES.min_replicas <= got.replicas <= RULES.max_replicas
    if free is not None and got.replicas > current:
        assert got.replicas - current <= free
    # Moves only towards the latest recommendation, never past it.
    latest = recs[-1]
    assert min(current, latest) <= got.replicas <= max(current, latest)
