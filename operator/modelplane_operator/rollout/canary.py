"""Canary: the new revision grows step by step to each step's share of ``replicas``.

The stable Service spreads traffic by ready pods, so the share is the traffic weight;
the old revision shrinks to the rest. Each step then pauses for its duration, or until
the ``modelplane.io/promote`` annotation changes. Going back to a revision that already
served is a rollback and takes no canary steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..analysis import Judgement, Verdict, judge
from ..metering import Interval
from ..phases import Phase
from ..pods import Event
from ..spec import Analysis, CanaryStep, Pause
from . import history, rolling
from .decision import Situation, Step
from .memory import AnalysisMemory, Memory, to_text

PROMOTE_ANNOTATION = "modelplane.io/promote"
ANALYSIS_FAILED = "AnalysisFailed"
ANALYSING = "CanaryAnalysing"


def step(s: Situation, mem: Memory, hist: Sequence[dict[str, Any]]) -> Step:
    steps = s.md.rollout.canary_steps
    if not _in_canary(s, mem, steps, hist):
        return rolling.step(s, mem)
    b = s.budget
    goal = (
        min(b.replicas, math.ceil(b.replicas * steps[mem.step].weight / 100)) if b.replicas else 0
    )
    desired, gpu_limited = rolling.roll(
        s.target_rev, s.target, goal, s.olds, b, s.gpu_slots, mem.stable
    )
    decided = _at_step(s, mem, steps, goal, desired)
    mem, gpu_events = rolling.note_gpu_limit(decided.memory, gpu_limited)
    return replace(decided, memory=mem, events=(*decided.events, *gpu_events))


def pause_seconds(pause: Pause | None) -> float:
    """A canary step's pause duration; 0 for none or a manual (duration-less) pause."""
    return pause.seconds or 0.0 if pause is not None else 0.0


def requeue_after(s: Situation, mem: Memory) -> float | None:
    """When a timed pause of the current step ends, or the measured interval does."""
    steps = s.md.rollout.canary_steps
    duration = pause_seconds(steps[min(mem.step, len(steps) - 1)].pause)
    times = []
    if duration and mem.step_started_at is not None:
        times.append(max(1.0, mem.step_started_at + duration - s.now + 0.5))
    if s.md.rollout.analysis is not None and s.analysis is not None:
        end = s.analysis.started_at + s.md.rollout.analysis.interval_s
        times.append(max(1.0, end - s.now + 0.5))
    return min(times) if times else None


def _in_canary(
    s: Situation, mem: Memory, steps: Sequence[CanaryStep], hist: Sequence[dict[str, Any]]
) -> bool:
    return (
        bool(steps)
        and mem.step < len(steps)
        and mem.stable not in (None, s.target)
        and not history.served_before(hist, s.target)
    )


def _at_step(
    s: Situation, mem: Memory, steps: Sequence[CanaryStep], goal: int, desired: dict[int, int]
) -> Step:
    """Promote to the next step, or pause at this one, once its share is in place."""
    target_rev = s.target_rev
    b = s.budget
    if target_rev is None:
        return Step(desired, mem, serving=mem.stable)
    in_place = target_rev.ready >= goal and sum(o.replicas for o in s.olds) <= b.replicas - goal
    if not in_place:
        return Step(desired, replace(mem, step_started_at=s.now), serving=mem.stable)
    index = mem.step
    pause = steps[index].pause
    token = s.annotations.get(PROMOTE_ANNOTATION)
    started = mem.step_started_at or s.now
    duration = pause_seconds(pause)
    promoted = token is not None and token != mem.promote_token
    rules = s.md.rollout.analysis
    if rules is not None and not promoted:
        return _analysed(s, mem, steps, goal, desired, rules)
    if pause is None or (duration and s.now - started >= duration) or promoted:
        how = " (promoted by annotation)" if promoted else ""
        return _advance(s, mem, steps, goal, desired, how, promote_token=token)
    when = (
        f"until {to_text(started + duration)}"
        if duration
        else f"until promoted (annotate {PROMOTE_ANNOTATION})"
    )
    message = (
        f"canary step {index + 1}/{len(steps)}: {goal}/{b.replicas} replicas "
        f"on version {target_rev.version}, paused {when}"
    )
    return _hold(s, mem, desired, "CanaryPaused", message)


def _advance(
    s: Situation,
    mem: Memory,
    steps: Sequence[CanaryStep],
    goal: int,
    desired: dict[int, int],
    how: str,
    promote_token: str | None = None,
) -> Step:
    index = mem.step
    mem = replace(
        mem,
        step=index + 1,
        step_started_at=s.now,
        last_progress_at=s.now,
        promote_token=promote_token if promote_token is not None else mem.promote_token,
        analysis=None,
    )
    done = Event(
        "Normal",
        "CanaryStepComplete",
        f"canary step {index + 1}/{len(steps)} ({goal}/{s.budget.replicas} "
        f"replicas on the new revision) complete{how}",
    )
    return Step(desired, mem, serving=mem.stable, events=(done,))


def _fresh_interval(s: Situation, mem: Memory) -> Interval | None:
    """The interval measured to its end at this step, with its share in place, that
    has not been judged yet."""
    reading = s.analysis
    if reading is None or reading.completed is None or reading.key[2] != mem.step:
        return None
    done = reading.completed
    judged = mem.analysis.judged_until if mem.analysis else 0.0
    in_place_since = mem.step_started_at or s.now
    # Within a millisecond of the one judged last is that one: intervals last seconds.
    if done.started_at < in_place_since or done.ended_at <= judged + 0.001:
        return None
    return done


def _figures(interval: Interval) -> dict[str, Any]:
    """What status shows of an interval: requests, success rate, p99 of both revisions."""
    c, st = interval.canary, interval.stable
    out: dict[str, Any] = {
        "requests": int(c.requests),
        "serverErrors": int(c.server_errors),
        "clientErrors": int(c.client_errors),
        "successRate": round(c.success_rate, 2) if c.success_rate is not None else None,
        "p99Ms": round(c.p99 * 1000, 2) if c.p99 is not None else None,
        "stableRequests": int(st.requests),
        "stableP99Ms": round(st.p99 * 1000, 2) if st.p99 is not None else None,
        "canaryPods": len(c.measured),
        "intervalSeconds": round(interval.ended_at - interval.started_at, 1),
    }
    return {k: v for k, v in out.items() if v is not None}


def _step_analysis(mem: Memory) -> AnalysisMemory:
    """The analysis of the current step: what memory holds of it, or a fresh one."""
    if mem.analysis is not None and mem.analysis.step == mem.step:
        return mem.analysis
    return AnalysisMemory(step=mem.step)


def _judged(mem: Memory, interval: Interval, j: Judgement) -> AnalysisMemory:
    am = _step_analysis(mem)
    return replace(
        am,
        intervals=am.intervals + (j.verdict != Verdict.NO_DATA),
        failed=am.failed + (j.verdict == Verdict.FAIL),
        verdict=j.verdict.value,
        message=j.message,
        judged_until=interval.ended_at,
        figures=_figures(interval),
    )


def _analysed(
    s: Situation,
    mem: Memory,
    steps: Sequence[CanaryStep],
    goal: int,
    desired: dict[int, int],
    rules: Analysis,
) -> Step:
    """A step in place under analysis: judge a newly measured interval, then abort,
    advance (once any pause has also passed) or keep measuring."""
    index = mem.step
    interval = _fresh_interval(s, mem)
    verdict: Verdict | None = None
    if interval is not None:
        j = judge(interval.canary, interval.stable, rules)
        verdict = j.verdict
        mem = replace(mem, analysis=_judged(mem, interval, j))
    am = _step_analysis(mem)
    mem = replace(mem, analysis=am)
    where = f"canary step {index + 1}/{len(steps)}"
    if am.failed >= rules.failure_limit:
        return _abort(s, mem, where, am)
    duration = pause_seconds(steps[index].pause)
    pause_over = not duration or s.now - (mem.step_started_at or s.now) >= duration
    if verdict is Verdict.PASS and pause_over:
        return _advance(s, mem, steps, goal, desired, f": analysis passed ({am.message})")
    target_rev = s.target_rev
    version = target_rev.version if target_rev else "?"
    said = f"; last interval {am.verdict}: {am.message}" if am.verdict else ""
    measuring = (
        f", measuring since {to_text(s.analysis.started_at)}" if s.analysis is not None else ""
    )
    message = (
        f"{where}: {goal}/{s.budget.replicas} replicas on version {version}, "
        f"analysis every {rules.interval_s:g}s{measuring}{said}"
    )
    return _hold(s, mem, desired, ANALYSING, message)


def _hold(s: Situation, mem: Memory, desired: dict[int, int], reason: str, message: str) -> Step:
    """Stay at this step; time held is not time without progress."""
    return Step(
        desired,
        replace(mem, last_progress_at=s.now),
        serving=mem.stable,
        phase=Phase.PAUSED,
        reason=reason,
        message=message,
    )


def _abort(s: Situation, mem: Memory, where: str, am: AnalysisMemory) -> Step:
    """The canary failed its analysis: latch the failure (as a crash loop would be)
    and let the stable revision serve again; the spec stays as it is."""
    message = f"analysis failed at {where}: {am.message}"
    mem = replace(
        mem,
        failed=s.target,
        failed_hash=mem.target_hash,
        failure_reason=ANALYSIS_FAILED,
        failure_message=message,
    )
    version = s.target_rev.version if s.target_rev else "?"
    event = Event(
        "Warning",
        ANALYSIS_FAILED,
        f"revision {s.target} (version {version}) {message}; rolling back to revision {mem.stable}",
    )
    return Step({}, mem, serving=mem.stable, events=(event,), aborted=True)
