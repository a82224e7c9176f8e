"""Closed-loop load generator: CONCURRENCY greenlets, each with its own connection.

OIP servers get tritonclient.http with binary tensors; TorchServe gets the same kind of
gevent HTTP client (geventhttpclient, which tritonclient itself uses) on its JSON API.

Usage: python loadgen.py SPEC_JSON -> JSON on stdout
SPEC: {"kind": "oip"|"torchserve", "url", "model", "width", "concurrency", "duration",
       "warmup"}
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import gevent
import numpy as np


def _oip_caller(spec: dict[str, Any]) -> Any:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(spec["url"], connection_timeout=60, network_timeout=60)
    x = np.random.default_rng(0).standard_normal((1, spec["width"]), dtype=np.float32)
    tensor = triton.InferInput("x", [1, spec["width"]], "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [triton.InferRequestedOutput("output0", binary_data=True)]

    def call() -> None:
        result = client.infer(spec["model"], [tensor], outputs=outputs)
        assert result.as_numpy("output0").shape == (1, spec["out_width"])

    return call


def _torchserve_caller(spec: dict[str, Any]) -> Any:
    from geventhttpclient import URL, HTTPClient

    url = URL(f"http://{spec['url']}/predictions/{spec['model']}")
    client = HTTPClient.from_url(url, concurrency=1, connection_timeout=60, network_timeout=60)
    row = np.random.default_rng(0).standard_normal(spec["width"]).astype(np.float32)
    body = json.dumps({"data": [row.tolist()]}).encode()
    headers = {"Content-Type": "application/json"}

    def call() -> None:
        response = client.post(url.request_uri, body=body, headers=headers)
        payload = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {payload[:200]!r}")
        assert len(json.loads(payload)["output0"][0]) == spec["out_width"]

    return call


def main() -> None:
    spec = json.loads(sys.argv[1])
    make = _oip_caller if spec["kind"] == "oip" else _torchserve_caller
    latencies: list[float] = []
    errors: list[str] = []
    start_at = time.perf_counter() + spec["warmup"]
    stop_at = start_at + spec["duration"]

    def worker() -> None:
        call = make(spec)
        while True:
            begin = time.perf_counter()
            if begin >= stop_at:
                return
            try:
                call()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                gevent.sleep(0.01)
                continue
            if begin >= start_at:
                latencies.append(time.perf_counter() - begin)

    gevent.joinall([gevent.spawn(worker) for _ in range(spec["concurrency"])])
    measured = max(1e-9, spec["duration"])
    result = {
        "requests": len(latencies),
        "rps": len(latencies) / measured,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) * 1e3 if latencies else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
