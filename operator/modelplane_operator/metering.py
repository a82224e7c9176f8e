"""What the operator measures between reconciles: canary intervals and load.

The scrapes at an interval's start live here, in the operator's memory, as the
HorizontalPodAutoscaler keeps its recommendations: a restarted operator starts a
fresh interval (and a fresh window) rather than judge counters it did not see
begin. What was decided from them (verdicts, replica counts) is kept in status.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from .analysis import Figures, Snapshot, figures
from .autoscale import Recommendation, recommend, trim
from .podmetrics import MetricsEndpoint
from .revisions import Revision
from .scrape import Scraper, scrape_pods
from .spec import Autoscaling

CanaryKey = tuple[int, int, int]  # target revision, stable revision, canary step


@dataclass(frozen=True)
class Interval:
    started_at: float
    ended_at: float
    canary: Figures
    stable: Figures


@dataclass(frozen=True)
class CanaryReading:
    key: CanaryKey
    started_at: float  # of the interval being measured now
    completed: Interval | None = None  # the last one measured to its end, for this key


@dataclass(frozen=True)
class LoadReading:
    in_flight: float
    measured: int  # ready pods that answered
    failed: dict[str, str]  # pod -> why not
    history: tuple[Recommendation, ...] = ()


@dataclass
class _CanaryRun:
    key: CanaryKey
    started_at: float
    canary: Snapshot
    stable: Snapshot
    completed: Interval | None = None


@dataclass
class Meters:
    """Per ModelDeployment (by uid): the running canary interval and the load history."""

    scraper: Scraper = scrape_pods
    _runs: dict[str, _CanaryRun] = field(default_factory=dict)
    _loads: dict[str, list[Recommendation]] = field(default_factory=dict)
    _refreshed: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh_due(self, uid: str, interval_s: float, now: float) -> bool:
        """Whether a refreshed tag is to be asked again now (spec.model.refreshInterval);
        a restarted operator asks once at start, then once per interval."""
        with self._lock:
            last = self._refreshed.get(uid)
            if last is not None and now - last < interval_s:
                return False
            self._refreshed[uid] = now
            return True

    def canary(
        self,
        uid: str,
        key: CanaryKey,
        canary: Revision,
        stable: Revision | None,
        endpoint: MetricsEndpoint,
        interval_s: float,
        now: float,
    ) -> CanaryReading:
        """Start an interval for ``key``, or close the running one once it has lasted
        ``interval_s`` (the next one starts from the same scrape)."""
        with self._lock:
            run = self._runs.get(uid)
        if run is None or run.key != key:
            run = _CanaryRun(key, now, *self._scrape(canary, stable, endpoint))
        elif now - run.started_at >= interval_s:
            end_canary, end_stable = self._scrape(canary, stable, endpoint)
            interval = Interval(
                run.started_at,
                now,
                figures(run.canary, end_canary),
                figures(run.stable, end_stable),
            )
            run = _CanaryRun(key, now, end_canary, end_stable, interval)
        with self._lock:
            self._runs[uid] = run
        return CanaryReading(key, run.started_at, run.completed)

    def load(
        self,
        uid: str,
        revisions: Iterable[Revision],
        endpoint: MetricsEndpoint,
        rules: Autoscaling,
        now: float,
    ) -> LoadReading:
        """In-flight requests over every ready pod now, and the recommendations so far."""
        pods = [p for r in revisions for p in r.ready_pods]
        snap = self.scraper(pods, endpoint)
        in_flight = sum(s.in_flight for s in snap.samples.values())
        with self._lock:
            history = trim(self._loads.get(uid, []), now, rules)
            if snap.samples and not snap.failed:
                # A pod that did not answer may hold any load: no recommendation then.
                history.append(Recommendation(now, recommend(in_flight, rules)))
            self._loads[uid] = history
        return LoadReading(in_flight, len(snap.samples), dict(snap.failed), tuple(history))

    def stop_canary(self, uid: str) -> None:
        with self._lock:
            self._runs.pop(uid, None)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._runs.pop(uid, None)
            self._loads.pop(uid, None)

    def _scrape(
        self, canary: Revision, stable: Revision | None, endpoint: MetricsEndpoint
    ) -> tuple[Snapshot, Snapshot]:
        at_canary = self.scraper(canary.ready_pods, endpoint)
        at_stable = self.scraper(stable.ready_pods if stable else (), endpoint)
        return at_canary, at_stable
