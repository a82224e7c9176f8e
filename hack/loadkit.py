"""Closed-loop load through a Service, bounded in count and time, and its figures."""

from __future__ import annotations

import json
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nodekit import INFER_BODY
from provenance import commit

BODY = INFER_BODY


@dataclass
class Outcome:
    at: float
    ok: bool
    version: str
    seconds: float
    error: str = ""
    body: int = 0  # which of the loop's bodies was sent


@dataclass
class ClosedLoop:
    """``clients`` threads, each with its own kept-alive connection, sending back to back
    until stopped, ``max_requests`` in all or ``max_seconds`` have passed."""

    url: str
    clients: int = 4
    max_requests: int = 40_000
    max_seconds: float = 300.0
    bodies: tuple[dict[str, Any], ...] = (BODY,)  # sent in turn by each client
    # A new connection per request: kube-proxy picks an endpoint per connection, so
    # traffic spreads by ready pods (as a canary's share needs), not by who came first.
    fresh: bool = False
    timeout: float = 10.0  # seconds a request may take before it counts as failed
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> ClosedLoop:
        self.started = time.monotonic()
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _transport(self) -> httpx.HTTPTransport:
        if not self.fresh:
            return httpx.HTTPTransport()
        # A fresh connection closed the usual way waits 60 s in TIME_WAIT here, and only
        # ~28,000 local ports reach one Service address: a fast model's load ran out of
        # them in under a minute ("Cannot assign requested address"). Closing with a
        # reset (linger 0), once the whole response has been read, leaves none behind.
        reset_on_close = (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return httpx.HTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0), socket_options=[reset_on_close]
        )

    def _run(self) -> None:
        sent = 0
        with httpx.Client(timeout=self.timeout, transport=self._transport()) as client:
            while not self._stop.is_set() and len(self.outcomes) < self.max_requests:
                if time.monotonic() - self.started > self.max_seconds:
                    return
                t0 = time.monotonic()
                which = sent % len(self.bodies)
                sent += 1
                try:
                    response = client.post(
                        f"{self.url}/v2/models/tiny/infer", json=self.bodies[which]
                    )
                    ok = response.status_code == 200
                    version = response.json().get("model_version", "") if ok else ""
                    error = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    ok, version, error = False, "", f"{type(exc).__name__}: {exc}"
                self.outcomes.append(
                    Outcome(t0 - self.started, ok, version, time.monotonic() - t0, error, which)
                )

    def figures(self) -> dict[str, Any]:
        latencies = sorted(o.seconds for o in self.outcomes if o.ok)
        versions: dict[str, int] = {}
        for o in self.outcomes:
            if o.ok:
                versions[o.version] = versions.get(o.version, 0) + 1
        return {
            "requests": len(self.outcomes),
            "failures": sum(not o.ok for o in self.outcomes),
            "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2)
            if latencies
            else None,
            "seconds": round(max((o.at for o in self.outcomes), default=0.0), 1),
            "versions": versions,
            "errors": sorted({o.error for o in self.outcomes if not o.ok})[:5],
        }


def write_report(path: Path, title: str, runs: dict[str, dict[str, Any]], setup: str) -> None:
    """The figures as JSON and Markdown, with the commit they were measured at."""
    data = {"commit": commit(), "measured": time.strftime("%Y-%m-%d"), "setup": setup, "runs": runs}
    path.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    rows = [
        f"| {name} | {r['requests']} | {r['failures']} | {r['p50_ms']} | {r['p99_ms']} "
        f"| {r['seconds']} | " + ", ".join(f"{v}: {n}" for v, n in r["versions"].items()) + " |"
        for name, r in runs.items()
    ]
    path.with_suffix(".md").write_text(
        f"# {title}\n\nMeasured at commit `{data['commit']}` on {data['measured']}. {setup}\n\n"
        "| run | requests | failed | p50 ms | p99 ms | seconds | answers by version |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
