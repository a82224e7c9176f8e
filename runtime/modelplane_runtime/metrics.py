"""Prometheus metrics with Triton's names where Triton has one.

Triton exposes its counters without the `_total` suffix that prometheus-client's text
format appends to counter families; dashboards written for Triton query the bare names,
so those families are exposed untyped with Triton's exact names and meanings (request
counts, and cumulative microseconds for the `_duration_us` families).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .errors import ErrorKind

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# 0.1 ms to 10 s, about three buckets a decade: a tiny model answers in a fraction of a
# millisecond in process, a large one in seconds; quantiles come from these buckets.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# A failure reason that is no ErrorKind: the client left before its answer was ready.
CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    """A request's outcome as an analysis judges it: 4xx are the client's doing."""

    SUCCESS = "success"
    CLIENT_ERROR = "client_error"  # 400, 401, 404: bad input, no token, wrong model
    SERVER_ERROR = "server_error"  # 500, 503: the model failed, or the server is not ready
    CANCELLED = "cancelled"  # the client left before its answer was ready


OUTCOME_OF_REASON = {
    ErrorKind.BAD_INPUT.value: Outcome.CLIENT_ERROR,
    ErrorKind.UNAUTHORIZED.value: Outcome.CLIENT_ERROR,
    ErrorKind.NOT_FOUND.value: Outcome.CLIENT_ERROR,
    ErrorKind.NOT_READY.value: Outcome.SERVER_ERROR,
    ErrorKind.INTERNAL.value: Outcome.SERVER_ERROR,
    CANCELLED: Outcome.CANCELLED,
}
TRITON_FAMILIES = {
    "nv_inference_request_success": "Number of successful inference requests",
    "nv_inference_request_failure": "Number of failed inference requests",
    "nv_inference_count": "Number of inferences performed (batch rows)",
    "nv_inference_exec_count": "Number of model executions performed (forward calls)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": (
        "Cumulative compute inference duration in microseconds"
    ),
}


class _TritonCounters(Collector):
    def __init__(self, model: str, version: str) -> None:
        self._labels = {"model": model, "version": version}
        self._lock = threading.Lock()
        self._values = dict.fromkeys(TRITON_FAMILIES, 0.0)
        # Every reason from the start: a rate() over a reason that has not happened yet
        # is then 0, not "no data".
        self._failures = dict.fromkeys((*(kind.value for kind in ErrorKind), CANCELLED), 0.0)

    def add(self, *amounts: tuple[str, float]) -> None:
        with self._lock:
            for name, amount in amounts:
                self._values[name] += amount

    def fail(self, reason: str) -> None:
        with self._lock:
            self._failures[reason] = self._failures.get(reason, 0.0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = dict(self._values)
            failures = dict(self._failures)
        for name, doc in TRITON_FAMILIES.items():
            family = Metric(name, doc, "unknown")
            if name == "nv_inference_request_failure":
                for reason, count in sorted(failures.items()):
                    family.add_sample(name, {**self._labels, "reason": reason}, count)
            else:
                family.add_sample(name, self._labels, values[name])
            yield family


class _QueueGauges(Collector):
    """Requests waiting and in flight, read from the executor at scrape time.

    Triton's pending count leaves out the requests being computed; an autoscaler wants
    both (a request that takes the whole forward pass is load too), so the in-flight
    gauge counts every request from receipt to response.
    """

    def __init__(self, model: str, version: str) -> None:
        self._labels = [model, version]
        self.pending: Callable[[], int] = lambda: 0
        self.in_flight: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Number of inference requests waiting for a model execution",
            labels=["model", "version"],
        )
        pending.add_metric(self._labels, self.pending())
        yield pending
        in_flight = GaugeMetricFamily(
            "modelplane_requests_in_flight",
            "Inference requests received and not yet answered (waiting or computing)",
            labels=["model", "version"],
        )
        in_flight.add_metric(self._labels, self.in_flight())
        yield in_flight


class _GpuMemory(Collector):
    """GPU memory per visible device, read at scrape time (only when CUDA is present)."""

    def collect(self) -> Iterator[Metric]:
        import torch

        if not torch.cuda.is_available():
            return
        used = GaugeMetricFamily("nv_gpu_memory_used_bytes", "GPU used memory", labels=["gpu"])
        total = GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory", labels=["gpu"])
        allocated = GaugeMetricFamily(
            "modelplane_gpu_memory_allocated_bytes",
            "GPU memory held by torch tensors in this process",
            labels=["gpu"],
        )
        for index in range(torch.cuda.device_count()):
            free, capacity = torch.cuda.mem_get_info(index)
            used.add_metric([str(index)], capacity - free)
            total.add_metric([str(index)], capacity)
            allocated.add_metric([str(index)], torch.cuda.memory_allocated(index))
        yield used
        yield total
        yield allocated


class Metrics:
    """All metrics of one runtime process, in their own registry."""

    def __init__(self, model: str, version: str, gpu: bool = False) -> None:
        self.registry = CollectorRegistry()
        self._triton = _TritonCounters(model, version)
        self.registry.register(self._triton)
        self._queue = _QueueGauges(model, version)
        self.registry.register(self._queue)
        labels = ["model", "version"]
        self._batch_size = prometheus_client.Histogram(
            "modelplane_inference_batch_size",
            "Rows per model execution (forward call)",
            labels,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels(model, version)
        self._duration = prometheus_client.Histogram(
            "modelplane_request_duration_seconds",
            "Duration of successful inference requests, receipt to response",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(model, version)
        outcomes = prometheus_client.Counter(
            "modelplane_requests",
            "Inference requests by outcome (client_error: 4xx; server_error: 5xx)",
            [*labels, "outcome"],
            registry=self.registry,
        )
        # Every outcome from the start: a rate over one that has not happened yet is 0.
        self._outcomes = {o: outcomes.labels(model, version, o.value) for o in Outcome}
        if gpu:
            self.registry.register(_GpuMemory())

    def count_queue(self, pending: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Read the pending and in-flight gauges from the executor at scrape time."""
        self._queue.pending = pending
        self._queue.in_flight = in_flight

    def batch_executed(self, rows: int, compute_s: float) -> None:
        self._triton.add(
            ("nv_inference_exec_count", 1),
            ("nv_inference_count", rows),
            ("nv_inference_compute_infer_duration_us", compute_s * 1e6),
        )
        self._batch_size.observe(rows)

    def request_succeeded(self, duration_s: float, queue_s: float) -> None:
        self._triton.add(
            ("nv_inference_request_success", 1),
            ("nv_inference_request_duration_us", duration_s * 1e6),
            ("nv_inference_queue_duration_us", queue_s * 1e6),
        )
        self._duration.observe(duration_s)
        self._outcomes[Outcome.SUCCESS].inc()

    def request_failed(self, reason: str) -> None:
        self._triton.fail(reason)
        self._outcomes[OUTCOME_OF_REASON.get(reason, Outcome.SERVER_ERROR)].inc()

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
