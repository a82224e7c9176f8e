"""Reading the runtime's /metrics from pods, directly at their pod addresses.

No Prometheus is needed: the operator asks each ready pod itself, a few at a time,
with a short timeout and no retries (a failed scrape is reported, never guessed).
HTTP is urllib3's, which the Kubernetes client is built on.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3

from .analysis import Snapshot
from .podmetrics import MetricsEndpoint, NotRuntimeMetrics, PodSample, parse_sample

SCRAPE_TIMEOUT_S = 2.0
PARALLEL = 8
log = logging.getLogger(__name__)
_http = urllib3.PoolManager(
    num_pools=64, timeout=urllib3.Timeout(total=SCRAPE_TIMEOUT_S), retries=False
)

Scraper = Callable[[Sequence[Mapping[str, Any]], MetricsEndpoint], Snapshot]


def container_started_at(pod: Mapping[str, Any]) -> float:
    """When the serving container last started: its counters count from then."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("name") == "runtime":
            started = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
            return _epoch(started)
    return 0.0


def _epoch(text: Any) -> float:
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _scrape_one(pod: Mapping[str, Any], endpoint: MetricsEndpoint) -> PodSample | str:
    name = str(pod["metadata"]["name"])
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return "no pod IP"
    host = f"[{ip}]" if ":" in ip else ip
    endpoint = endpoint.of_pod((pod.get("metadata") or {}).get("annotations") or {})
    try:
        response = _http.request("GET", f"http://{host}:{endpoint.port}{endpoint.path}")
    except urllib3.exceptions.HTTPError as exc:
        return f"GET {endpoint.path} failed: {type(exc).__name__}"
    if response.status != 200:
        return f"GET {endpoint.path} answered HTTP {response.status}"
    try:
        text = response.data.decode()
        return parse_sample(text, name, container_started_at(pod), time.time(), endpoint.dialect)
    except (NotRuntimeMetrics, ValueError, KeyError) as exc:
        return f"unreadable /metrics: {exc}"


def scrape_pods(pods: Sequence[Mapping[str, Any]], endpoint: MetricsEndpoint) -> Snapshot:
    """Scrape every pod given; what each said or why it could not be read."""
    at = time.time()
    if not pods:
        return Snapshot(at)
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(pods))) as pool:
        results = list(pool.map(lambda p: _scrape_one(p, endpoint), pods))
    samples: dict[str, PodSample] = {}
    failed: dict[str, str] = {}
    for pod, result in zip(pods, results, strict=True):
        name = str(pod["metadata"]["name"])
        if isinstance(result, str):
            failed[name] = result
            log.info("scrape of pod %s failed: %s", name, result)
        else:
            samples[name] = result
    return Snapshot(at, samples, failed)
