"""Dynamic batching: concurrent requests share forward calls and get exactly their rows back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from runtimekit import RuntimeServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: RuntimeServer) -> Samples:
    text = server.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (sample, sample_labels), v in metrics.items()
        if sample == name and all(dict(sample_labels).get(k) == lab for k, lab in labels.items())
    )


def _client(server: RuntimeServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def _infer(client: triton.InferenceServerClient, x: np.ndarray, model: str = "tiny") -> np.ndarray:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(model, [tensor])
    out = result.as_numpy("output0")
    assert out is not None
    return out


def test_concurrent_requests_are_batched_and_split_exactly(
    slow_server: RuntimeServer, slow_model_dir: Path
) -> None:
    rng = np.random.default_rng(7)
    # Distinct row counts and values: a mis-split would hand a request someone else's rows.
    requests = [rng.standard_normal((1 + i % 3, 16), dtype=np.float32) * (i + 1) for i in range(24)]
    # An idle batcher runs a request at once, so merging needs requests that arrive while
    # a pass runs: the slow model's passes take tens of milliseconds. Clients are built
    # first and released together so that they are not spread further apart than that.
    clients = [_client(slow_server) for _ in requests]
    start = threading.Barrier(len(requests))

    def infer_together(client: triton.InferenceServerClient, x: np.ndarray) -> np.ndarray:
        start.wait(timeout=30)
        return _infer(client, x, "slow")

    before = scrape(slow_server)
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        results = list(pool.map(infer_together, clients, requests))
    after = scrape(slow_server)

    module = torch.export.load(str(slow_model_dir / "model.pt2")).module()
    with torch.inference_mode():
        for x, got in zip(requests, results, strict=True):
            unbatched = module(torch.from_numpy(x)).numpy()
            assert got.shape == unbatched.shape
            # Kernels may sum in another order at another batch size: equal to float32 rounding.
            np.testing.assert_allclose(got, unbatched, rtol=1e-5, atol=1e-6)

    rows = sum(len(x) for x in requests)
    executions = value(after, "nv_inference_exec_count") - value(before, "nv_inference_exec_count")
    assert value(after, "nv_inference_request_success") - value(
        before, "nv_inference_request_success"
    ) == len(requests)
    assert value(after, "nv_inference_count") - value(before, "nv_inference_count") == rows
    assert 1 <= executions < len(requests), "requests were not merged into shared forward calls"
    batch_rows = value(after, "modelplane_inference_batch_size_sum") - value(
        before, "modelplane_inference_batch_size_sum"
    )
    assert batch_rows == rows
    # Requests merged into a shared forward call waited in the queue for it.
    queued = value(after, "nv_inference_queue_duration_us") - value(
        before, "nv_inference_queue_duration_us"
    )
    assert queued > 0
    # The batcher's limit (8 rows) is never exceeded.
    over_limit = value(after, "modelplane_inference_batch_size_count") - value(
        after, "modelplane_inference_batch_size_bucket", le="8.0"
    )
    assert over_limit == 0


def test_metrics_move_on_success_and_failure(tiny_server: RuntimeServer) -> None:
    before = scrape(tiny_server)
    _infer(_client(tiny_server), np.ones((2, 16), np.float32))
    bad = httpx.post(f"{tiny_server.url}/v2/models/tiny/infer", content=b"{")
    assert bad.status_code == 400
    after = scrape(tiny_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("nv_inference_request_success", model="tiny", version="1") == 1
    assert delta("nv_inference_request_failure", reason="bad_input") == 1
    assert delta("nv_inference_count") == 2
    assert delta("nv_inference_exec_count") == 1
    assert delta("nv_inference_request_duration_us") > 0
    assert delta("nv_inference_compute_infer_duration_us") > 0
    assert delta("modelplane_request_duration_seconds_count") == 1


def test_an_unknown_requested_output_is_refused_before_any_compute(
    tiny_server: RuntimeServer,
) -> None:
    before = scrape(tiny_server)
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}],
        "outputs": [{"name": "no_such_output"}],
    }
    answer = httpx.post(f"{tiny_server.url}/v2/models/tiny/infer", json=body)
    assert answer.status_code == 400
    assert "no_such_output" in answer.json()["error"]
    after = scrape(tiny_server)
    assert value(after, "nv_inference_exec_count") == value(before, "nv_inference_exec_count")
