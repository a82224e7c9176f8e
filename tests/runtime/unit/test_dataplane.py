"""The data plane answers inference without any HTTP: a body callable in, tensors out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelplane_runtime.config import Settings
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.errors import ErrorKind, RuntimeServingError
from modelplane_runtime.lifecycle import ModelService


def _request(rows: int) -> bytes:
    data = [float(i % 7) for i in range(rows * 16)]
    tensor = {"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


async def _answers(model_dir: Path) -> tuple[dict[str, object], str, str]:
    settings = Settings(model_name="tiny", model_dir=model_dir, batching=True, exit_on_error=False)
    service = ModelService(settings)
    await service.load()
    plane = DataPlane(service)
    try:

        async def body() -> bytes:
            return _request(3)

        encoded = await plane.infer("tiny", None, body, None)

        async def bad() -> bytes:
            return b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1]}]}'

        with pytest.raises(RuntimeServingError) as refused:
            await plane.infer("tiny", None, bad, None)
        assert refused.value.kind is ErrorKind.BAD_INPUT
        with pytest.raises(RuntimeServingError) as unknown:
            await plane.infer("other", None, body, None)
        assert unknown.value.kind is ErrorKind.NOT_FOUND
        return json.loads(encoded.body), service.metrics.render().decode(), service.state
    finally:
        await service.close()


def test_the_data_plane_infers_refuses_and_counts_without_a_server(tiny_model_dir: Path) -> None:
    answer, metrics, state = asyncio.run(_answers(tiny_model_dir))
    assert state == "ready"
    (output,) = answer["outputs"]  # type: ignore[misc]
    assert output["shape"] == [3, 4]
    assert len(output["data"]) == 12
    outcomes = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "modelplane_requests_total"
    }
    # One success and one bad input; the other model's name is not this model's request.
    assert {k: v for k, v in outcomes.items() if v} == {"success": 1.0, "client_error": 1.0}
