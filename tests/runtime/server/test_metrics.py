"""The runtime's request metrics, as an analysis reads them from a scrape."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from runtimekit import StartServer

BODY = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def _samples(text: str, family: str) -> dict[str, float]:
    """{label text: value} of one family's samples."""
    found = {}
    for labels, value in re.findall(rf"^{family}\{{([^}}]*)\}} (\S+)$", text, re.M):
        found[labels] = float(value)
    return found


def test_outcomes_separate_client_errors_from_server_errors_and_latency_has_fine_buckets(
    start_server: StartServer, tiny_model_dir: Path
) -> None:
    server = start_server(tiny_model_dir, MODELPLANE_MODEL_NAME="tiny")
    server.wait_ready()
    before = _samples(server.get("/metrics").text, "modelplane_requests_total")
    assert set(before.values()) == {0.0}, "every outcome is exported from the start"
    url = f"{server.url}/v2/models/tiny/infer"
    for _ in range(3):
        assert httpx.post(url, json=BODY, timeout=30).status_code == 200
    assert httpx.post(url, content=b"{not json", timeout=30).status_code == 400
    bad_shape = {"inputs": [{**BODY["inputs"][0], "shape": [1, 15]}]}
    assert httpx.post(url, json=bad_shape, timeout=30).status_code == 400
    assert httpx.post(f"{server.url}/v2/models/other/infer", json=BODY).status_code == 404
    text = server.get("/metrics").text
    outcomes = {
        re.search(r'outcome="([^"]+)"', k).group(1): v  # type: ignore[union-attr]
        for k, v in _samples(text, "modelplane_requests_total").items()
    }
    # The 404 names another model: no request of this model's, so not in its figures.
    assert outcomes == {"success": 3, "client_error": 2, "server_error": 0, "cancelled": 0}
    buckets = _samples(text, "modelplane_request_duration_seconds_bucket")
    bounds = sorted(float(re.search(r'le="([^"]+)"', k).group(1)) for k in buckets)  # type: ignore[union-attr]
    assert bounds[0] == 0.0001 and 10.0 in bounds
    assert _samples(text, "modelplane_request_duration_seconds_count") == {
        'model="tiny",version="1"': 3.0
    }
