"""modelplane's TorchServe handler, called as TorchServe's worker calls it (`handle(data,
context)`), on a packaged tiny model: v2 JSON in and out, bad input refused with 400."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from modelplane_runtime import torchserve_handler
from modelplane_runtime.package import load_factory, package_model
from runtimekit import EXAMPLES

ROWS = np.linspace(-1.0, 1.0, 2 * 16, dtype=np.float32).reshape(2, 16)


@dataclass
class Context:
    """The parts of TorchServe's ts.context.Context the handler reads and writes."""

    model_dir: str
    model_name: str = "tiny"
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def system_properties(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir}

    @property
    def manifest(self) -> dict[str, Any]:
        return {"model": {"modelName": "archive-name", "modelVersion": "v3"}}

    def set_response_status(self, code: int, phrase: str, idx: int = 0) -> None:
        self.statuses[idx] = code


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Context, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("tiny")
    module = load_factory(f"{EXAMPLES}:tiny_mlp")()
    package_model(module, {"x": torch.randn(2, 16)}, folder, name="tiny", max_batch_size=4)
    handler = torchserve_handler.ModelplaneHandler()
    context = Context(str(folder))
    handler.initialize(context)
    return handler, context, module


def _body(**tensor: Any) -> dict[str, Any]:
    base = {"name": "x", "shape": [2, 16], "datatype": "FP32", "data": ROWS.ravel().tolist()}
    return {"body": {"id": "7", "inputs": [{**base, **tensor}]}}


def test_a_batch_of_requests_is_answered_each_like_the_model(served: Any) -> None:
    handler, context, module = served
    as_bytes = {"body": json.dumps(_body()["body"]).encode()}
    as_text = {"body": json.dumps(_body()["body"])}
    answers = handler.handle([_body(), as_bytes, as_text], context)
    with torch.no_grad():
        expected = module(torch.from_numpy(ROWS)).numpy()
    for answer in answers:
        # The registered name, not the archive's; the archive's version.
        assert (answer["model_name"], answer["model_version"], answer["id"]) == ("tiny", "v3", "7")
        (out,) = answer["outputs"]
        np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), expected, atol=1e-6)
    assert context.statuses == {}


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        ({"data": [[0.0] * 16] * 2}, "flat list of 32 values"),
        ({"data": [[0.0]] * 32}, "not FP32"),  # nested, though 32 long
        ({"data": ["a"] * 32}, "not FP32"),
        ({"datatype": "INT64", "data": [1] * 32}, "the model takes FP32"),
        ({"shape": [5, 16], "data": [0.0] * 80}, "exceeds max_batch_size 4"),
        ({"shape": [2, 15], "data": [0.0] * 30}, "does not fit"),
        ({"name": "y"}, "missing ['x']"),
    ],
)
def test_bad_input_gets_400_and_an_error(served: Any, tensor: dict[str, Any], words: str) -> None:
    handler, context, _ = served
    context.statuses.clear()
    good, bad = handler.handle([_body(), _body(**tensor)], context)
    assert "outputs" in good and context.statuses == {1: 400}
    assert words in bad["error"]


@pytest.mark.parametrize(
    ("data", "datatype", "fits"),
    [
        ([1, 2], "INT8", True),
        ([1.5, 2.0], "INT64", False),  # no silent truncation
        ([200], "INT8", False),
        ([True, 2], "BOOL", False),
        ([True, False], "BOOL", True),
        ([True], "FP32", False),
        ([1, 2.5], "FP16", True),
    ],
)
def test_values_must_be_of_the_datatype_s_kind_and_range(
    data: list[Any], datatype: str, fits: bool
) -> None:
    assert torchserve_handler._values_fit(data, datatype) is fits
