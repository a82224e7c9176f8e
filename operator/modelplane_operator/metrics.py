"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "modelplane_reconciles_total", "Reconciles of ModelDeployments, by result", ["result"]
)
RECONCILE_ERRORS = Counter(
    "modelplane_reconcile_errors_total", "Reconciles that failed, by error kind", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "modelplane_reconcile_duration_seconds",
    "Time to reconcile one ModelDeployment",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter(
    "modelplane_api_writes_total", "Writes the operator sent to the API server", ["kind", "verb"]
)
API_REQUESTS = Counter(
    "modelplane_api_requests_total", "Requests (reads and writes) the reconciler sent"
)
RECONCILE_RETRIES = Counter(
    "modelplane_reconcile_retries_total",
    "Failed reconciles requeued with per-object exponential backoff",
)
QUEUE_DEPTH = Gauge("modelplane_workqueue_depth", "ModelDeployments waiting for a worker")
