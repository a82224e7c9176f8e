"""One scrape of one runtime pod's /metrics, as the figures an analysis needs.

Parsed with prometheus-client's own text parser. The families are the runtime's
(docs/runtime.md, Metrics): requests by outcome, the latency histogram of successful
requests and the in-flight gauge. A pod serves one model, so samples are summed over
their labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

OUTCOMES = "modelplane_requests"
LATENCY = "modelplane_request_duration_seconds"
IN_FLIGHT = "modelplane_requests_in_flight"


@dataclass(frozen=True)
class PodSample:
    """Cumulative counters of one runtime process at one moment, and its gauge."""

    pod: str
    started_at: float  # when the serving container (so its counters) started, epoch s
    at: float  # when it was scraped
    successes: float = 0.0
    server_errors: float = 0.0
    client_errors: float = 0.0
    # Cumulative bucket counts of successful requests by upper bound, +Inf included.
    buckets: Mapping[float, float] = field(default_factory=dict)
    in_flight: float = 0.0


class NotRuntimeMetrics(ValueError):
    """The text has none of the runtime's families: not a modelplane runtime."""


def parse_sample(text: str, pod: str, started_at: float, at: float) -> PodSample:
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    in_flight = 0.0
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name not in (OUTCOMES, LATENCY, IN_FLIGHT):
            continue
        seen = True
        for sample in family.samples:
            if sample.name == f"{OUTCOMES}_total":
                outcome = sample.labels.get("outcome", "")
                outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
            elif sample.name == f"{LATENCY}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == IN_FLIGHT:
                in_flight += sample.value
    if not seen:
        raise NotRuntimeMetrics(f"pod {pod}: /metrics has no {OUTCOMES} or {LATENCY} family")
    return PodSample(
        pod=pod,
        started_at=started_at,
        at=at,
        successes=outcomes.get("success", 0.0),
        server_errors=outcomes.get("server_error", 0.0),
        client_errors=outcomes.get("client_error", 0.0),
        buckets=dict(sorted(buckets.items())),
        in_flight=in_flight,
    )


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative buckets, interpolated inside the bucket as
    Prometheus's histogram_quantile does; None without observations.

    A quantile in the +Inf bucket is the highest finite bound (nothing better is known).
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return min(bound, lower_bound + (bound - lower_bound) * share)  # no rounding past
        lower_bound, lower_count = bound, count
    return lower_bound
