"""A canary's figures over one interval, from two scrapes of each pod, and the verdict.

Pure arithmetic: no I/O, no clock. Counters are cumulative per runtime process, so an
interval's figures are the difference between the scrape at its end and the one at its
start, pod by pod:

- the same process at both ends: the difference (a counter that went down was reset,
  so what it shows counts from zero);
- a process that started after the interval began (a restart, or a new pod): all it
  counted, since it counted from zero within the interval;
- a pod that was not ready at the start: all it counted, since the Service sent it
  nothing before it was ready;
- otherwise (ready at the start but not scraped then, or gone or not scraped at the
  end) nobody knows what it served: the pod is unmeasured, and an interval with an
  unmeasured canary pod is no data, never a pass.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .podmetrics import PodSample, bucket_quantile
from .spec import Analysis


@dataclass(frozen=True)
class Snapshot:
    """One scrape of a set of ready pods: what each said, or why it could not be read."""

    at: float
    samples: Mapping[str, PodSample] = field(default_factory=dict)
    failed: Mapping[str, str] = field(default_factory=dict)  # pod -> error


@dataclass(frozen=True)
class Figures:
    """Requests of one revision's pods over an interval."""

    successes: float = 0.0
    server_errors: float = 0.0
    client_errors: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)
    measured: tuple[str, ...] = ()
    unmeasured: Mapping[str, str] = field(default_factory=dict)  # pod -> why

    @property
    def requests(self) -> float:
        """What an analysis judges: client errors are the client's doing."""
        return self.successes + self.server_errors

    @property
    def success_rate(self) -> float | None:
        return 100.0 * self.successes / self.requests if self.requests else None

    @property
    def p99(self) -> float | None:
        return bucket_quantile(0.99, self.buckets)


def _minus(after: PodSample, before: PodSample) -> PodSample | None:
    """after - before for the same process; None when a counter went down (a reset)."""
    derived = after.total is not None and before.total is not None
    counted = ("total",) if derived else ("successes",)
    counters = (*counted, "server_errors", "client_errors")
    if any(getattr(after, c) < getattr(before, c) for c in counters) or any(
        after.buckets.get(b, 0.0) < v for b, v in before.buckets.items()
    ):
        return None
    server_errors = after.server_errors - before.server_errors
    client_errors = after.client_errors - before.client_errors
    if derived:
        assert after.total is not None and before.total is not None
        successes = max(0.0, after.total - before.total - server_errors - client_errors)
    else:
        successes = after.successes - before.successes
    return PodSample(
        pod=after.pod,
        started_at=after.started_at,
        at=after.at,
        successes=successes,
        server_errors=server_errors,
        client_errors=client_errors,
        buckets={b: v - before.buckets.get(b, 0.0) for b, v in after.buckets.items()},
    )


def pod_delta(pod: str, start: Snapshot, end: Snapshot, ready_at_start: bool) -> PodSample | str:
    """What one pod served within [start, end]: a sample of differences, or why unknown."""
    after = end.samples.get(pod)
    if after is None:
        return end.failed.get(pod) or "gone before the end of the interval"
    before = start.samples.get(pod)
    if before is not None and before.started_at == after.started_at:
        return _minus(after, before) or after
    if after.started_at >= start.at or not ready_at_start:
        return after  # its counters began within the interval
    return start.failed.get(pod) or "not scraped at the start of the interval"


def figures(start: Snapshot, end: Snapshot) -> Figures:
    """The interval's figures of one revision's ready pods, scraped at both ends."""
    was_ready = set(start.samples) | set(start.failed)
    deltas: dict[str, PodSample] = {}
    unknown: dict[str, str] = {}
    for pod in sorted(was_ready | set(end.samples) | set(end.failed)):
        delta = pod_delta(pod, start, end, pod in was_ready)
        if isinstance(delta, str):
            unknown[pod] = delta
        else:
            deltas[pod] = delta
    buckets: dict[float, float] = {}
    for d in deltas.values():
        for bound, count in d.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
    return Figures(
        successes=sum(d.successes for d in deltas.values()),
        server_errors=sum(d.server_errors for d in deltas.values()),
        client_errors=sum(d.client_errors for d in deltas.values()),
        buckets=dict(sorted(buckets.items())),
        measured=tuple(sorted(deltas)),
        unmeasured=unknown,
    )


class Verdict(enum.StrEnum):
    PASS = "Passed"
    FAIL = "Failed"
    NO_DATA = "NoData"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    message: str  # the measured numbers against the thresholds


def judge(canary: Figures, stable: Figures, rules: Analysis) -> Judgement:
    """One interval against the analysis' rules; every failed rule is named."""
    if canary.unmeasured:
        pods = "; ".join(f"{p}: {why}" for p, why in sorted(canary.unmeasured.items()))
        return Judgement(Verdict.NO_DATA, f"canary pods unmeasured ({pods})")
    if canary.requests < rules.min_requests:
        return Judgement(
            Verdict.NO_DATA,
            f"{canary.requests:,.0f} requests < {rules.min_requests:,} needed to judge",
        )
    checks: list[tuple[bool, str]] = []
    over = f"over {canary.requests:,.0f} requests"
    rate = canary.success_rate
    if rules.min_success_rate is not None and rate is not None:
        sign = ">=" if rate >= rules.min_success_rate else "<"
        checks.append(
            (
                rate >= rules.min_success_rate,
                f"success {rate:.1f}% {sign} {rules.min_success_rate:g}% {over}",
            )
        )
    p99 = canary.p99
    if rules.max_p99_s is not None:
        if p99 is None:
            checks.append((False, "no successful request to measure p99 on"))
        else:
            ok = p99 <= rules.max_p99_s
            checks.append((ok, f"p99 {_ms(p99)} {'<=' if ok else '>'} {_ms(rules.max_p99_s)}"))
    if rules.max_p99_ratio is not None:
        baseline = stable.p99
        if baseline is None or p99 is None:
            return Judgement(Verdict.NO_DATA, "no p99 of the stable revision to compare with")
        ratio = p99 / baseline if baseline > 0 else float("inf")
        ok = ratio <= rules.max_p99_ratio
        checks.append(
            (
                ok,
                f"p99 {_ms(p99)} is {ratio:.2f}x stable's {_ms(baseline)} "
                f"({'<=' if ok else '>'} {rules.max_p99_ratio:g}x)",
            )
        )
    failed = [text for ok, text in checks if not ok]
    if failed:
        return Judgement(Verdict.FAIL, "; ".join(failed))
    return Judgement(Verdict.PASS, "; ".join(text for _, text in checks))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if seconds < 10 else f"{seconds:.1f}s"
