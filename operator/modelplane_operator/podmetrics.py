"""One scrape of one runtime pod's /metrics, as the figures an analysis needs.

Parsed with prometheus-client's own text parser. The families are the runtime's
(docs/runtime.md, Metrics): requests by outcome, the latency histogram of successful
requests and the in-flight gauge; another server's ``Dialect`` names its own families for
the same figures, where it has them (docs/servers.md). A pod serves one model, so samples
are summed over their labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

OUTCOMES = "modelplane_requests"
LATENCY = "modelplane_request_duration_seconds"
IN_FLIGHT = "modelplane_requests_in_flight"

SUCCESS, CLIENT_ERROR, SERVER_ERROR = "success", "client_error", "server_error"
TOTAL = "total"  # every inference request, whatever its outcome
# A counter's name (prometheus-client's parser gives every counter's samples a _total
# suffix: without it here) and labels -> the outcome it counts, or None.
OutcomeOf = Callable[[str, Mapping[str, str]], str | None]


@dataclass(frozen=True)
class Dialect:
    """Which samples of a server's /metrics mean requests by outcome, the latency of
    successful requests (a histogram in seconds) and the requests in flight."""

    name: str
    outcome_of: OutcomeOf
    latency_bucket: str | None = None  # the histogram's _bucket sample name
    in_flight: tuple[str, ...] = ()  # gauges summed: pending plus executing work
    # Successes as the inference requests that were not errors, for a server whose count
    # of successful answers also holds its health checks.
    successes_from_total: bool = False
    # Families that show the endpoint is this server's before its request counters exist
    # (a server that creates a counter at its first increment).
    markers: tuple[str, ...] = ()


def _modelplane_outcome(name: str, labels: Mapping[str, str]) -> str | None:
    return labels.get("outcome", "") if name == OUTCOMES else None


# TorchServe's frontend counts its inference requests, and every answer by status class
# (one model per pod). Requests2XX counts the kubelet's /ping probes too, so successes
# are the inference requests less the errors.
_TORCHSERVE_COUNTERS = {
    "ts_inference_requests": TOTAL,
    "Requests4XX": CLIENT_ERROR,
    "Requests5XX": SERVER_ERROR,
}
# prometheus-fastapi-instrumentator, in vLLM's OpenAI server: status grouped as 2xx, 4xx...
_HTTP_STATUS = {"2": SUCCESS, "4": CLIENT_ERROR, "5": SERVER_ERROR}


def _torchserve_outcome(name: str, labels: Mapping[str, str]) -> str | None:
    return _TORCHSERVE_COUNTERS.get(name)


# Triton does not tell a client's bad request from a model failure: both are failures.
_TRITON_COUNTERS = {
    "nv_inference_request_success": SUCCESS,
    "nv_inference_request_failure": SERVER_ERROR,
}


def _triton_outcome(name: str, labels: Mapping[str, str]) -> str | None:
    return _TRITON_COUNTERS.get(name)


def _vllm_outcome(name: str, labels: Mapping[str, str]) -> str | None:
    if name != "http_requests" or labels.get("handler", "").startswith(("/health", "/metrics")):
        return None
    return _HTTP_STATUS.get(labels.get("status", "")[:1])


MODELPLANE = Dialect("modelplane", _modelplane_outcome, f"{LATENCY}_bucket", (IN_FLIGHT,))
# Requests2XX exists from the first /ping answer on: before any pod is Ready.
TORCHSERVE = Dialect(
    "torchserve", _torchserve_outcome, successes_from_total=True, markers=("Requests2XX",)
)
# nv_inference_pending_request_count: queued requests (Triton has no gauge of executing).
TRITON = Dialect("triton", _triton_outcome, None, ("nv_inference_pending_request_count",))
VLLM = Dialect(
    "vllm",
    _vllm_outcome,
    "vllm:e2e_request_latency_seconds_bucket",
    ("vllm:num_requests_running", "vllm:num_requests_waiting"),
)


DIALECTS = {d.name: d for d in (MODELPLANE, TORCHSERVE, TRITON, VLLM)}
# On a serving pod (beside prometheus.io/port and /path): which server's metrics it has,
# so that each revision is read as what it runs, whatever the spec says now. Absent:
# modelplane's runtime.
SERVER_ANNOTATION = "modelplane.io/server"


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where a serving pod's metrics are, and how to read them."""

    port: int
    path: str = "/metrics"
    dialect: Dialect = MODELPLANE

    def of_pod(self, annotations: Mapping[str, str]) -> MetricsEndpoint:
        """Where this pod's metrics are, by its own annotations: a revision made for
        another server (or port) than the spec's now keeps being read as it runs."""
        try:
            port = int(annotations.get("prometheus.io/port", self.port))
        except ValueError:
            port = self.port
        path = annotations.get("prometheus.io/path") or self.path
        kind = annotations.get(SERVER_ANNOTATION, MODELPLANE.name)
        return MetricsEndpoint(port, path, DIALECTS.get(kind, self.dialect))


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
    # Inference requests of every outcome, for a server that counts those and not its
    # successes (successes is then total less the errors: analysis differences the raw
    # counters first, since that derived figure need not only grow).
    total: float | None = None


class NotRuntimeMetrics(ValueError):
    """The text has none of the server's families: not the server the spec names."""


def parse_sample(
    text: str, pod: str, started_at: float, at: float, dialect: Dialect = MODELPLANE
) -> PodSample:
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    in_flight = 0.0
    seen = False
    for family in text_string_to_metric_families(text):
        seen = seen or family.name in dialect.markers
        for sample in family.samples:
            counter = family.type == "counter"
            outcome = (
                dialect.outcome_of(sample.name.removesuffix("_total"), sample.labels)
                if counter
                else None
            )
            if outcome is not None:
                outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
            elif sample.name == dialect.latency_bucket:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name in dialect.in_flight:
                in_flight += sample.value
            else:
                continue
            seen = True
    if dialect.successes_from_total:
        errors = outcomes.get(CLIENT_ERROR, 0.0) + outcomes.get(SERVER_ERROR, 0.0)
        outcomes[SUCCESS] = max(0.0, outcomes.get(TOTAL, 0.0) - errors)
    if not seen:
        raise NotRuntimeMetrics(
            f"pod {pod}: /metrics has none of the {dialect.name} server's request metrics"
        )
    return PodSample(
        pod=pod,
        started_at=started_at,
        at=at,
        successes=outcomes.get(SUCCESS, 0.0),
        server_errors=outcomes.get(SERVER_ERROR, 0.0),
        client_errors=outcomes.get(CLIENT_ERROR, 0.0),
        buckets=dict(sorted(buckets.items())),
        in_flight=in_flight,
        total=outcomes.get(TOTAL, 0.0) if dialect.successes_from_total else None,
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
