"""`modelplane package` and loading: metadata contents and refusal of foreign artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelplane_runtime.cli import main
from modelplane_runtime.metadata import MetadataError, check_torch_version
from modelplane_runtime.model import LoadedModel, ModelLoadError
from runtimekit import EXAMPLES


def test_cli_packages_the_example_with_dynamic_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny"
    code = main(
        [
            "package",
            f"{EXAMPLES}:tiny_mlp",
            "-o",
            str(out),
            "--input",
            "features:FP32:-1,16",
            "--output-name",
            "scores",
            "--max-batch-size",
            "12",
            "--name",
            "tiny",
        ]
    )
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["max_batch_size"] == 12
    assert meta["torch_version"] == torch.__version__
    assert meta["name"] == "tiny"
    model = LoadedModel.load(out / "metadata.json")
    for rows in (1, 12):
        x = np.random.default_rng(rows).standard_normal((rows, 16), dtype=np.float32)
        assert model.validate({"features": x}) == rows
        assert model.predict({"features": x})["scores"].shape == (rows, 4)


def test_cli_uses_example_inputs_beside_the_factory(tmp_path: Path) -> None:
    assert main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["max_batch_size"] == 32


def test_cli_reports_a_bad_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["package", f"{EXAMPLES}:no_such_model", "-o", str(tmp_path)]) == 1
    assert "no callable 'no_such_model'" in capsys.readouterr().err
    assert not (tmp_path / "metadata.json").exists()


def test_dynamic_non_batch_dimension_is_recorded(tmp_path: Path) -> None:
    class Pool(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens.float().mean(dim=1)

    from modelplane_runtime.package import package_model

    meta = package_model(
        Pool(),
        {"tokens": torch.ones(2, 5, dtype=torch.int64)},
        tmp_path,
        dynamic_dims={"tokens": [1]},
    )
    assert meta.inputs[0].shape == (-1, -1)
    assert meta.inputs[0].datatype == "INT64"
    assert meta.outputs[0].shape == (-1,)
    model = LoadedModel.load(tmp_path / "metadata.json")
    out = model.predict({"tokens": np.arange(14, dtype=np.int64).reshape(2, 7)})
    np.testing.assert_allclose(out["output0"], [3.0, 10.0])


def test_artifact_from_another_torch_is_refused(tmp_path: Path) -> None:
    assert main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path)]) == 0
    path = tmp_path / "metadata.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "torch_version": "2.3.1+cu121"}))
    with pytest.raises(ModelLoadError, match=r"exported with torch 2\.3\.1\+cu121") as info:
        LoadedModel.load(path)
    assert "re-run `modelplane package`" in str(info.value)


@pytest.mark.parametrize(
    ("made", "running", "ok"),
    [
        ("2.15.0", "2.15.1", True),
        ("2.15.0+cu132", "2.15.0", True),
        ("2.14.0", "2.15.0", False),
        ("3.15.0", "2.15.0", False),
    ],
)
def test_torch_version_rule(made: str, running: str, ok: bool) -> None:
    if ok:
        check_torch_version(made, running)
    else:
        with pytest.raises(MetadataError, match="incompatible artifact"):
            check_torch_version(made, running)


def test_precision_needs_gpu(tmp_path: Path) -> None:
    assert main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path)]) == 0
    with pytest.raises(ModelLoadError, match="needs MODELPLANE_DEVICE=cuda"):
        LoadedModel.load(tmp_path / "metadata.json", device="cpu", precision="float16")
    with pytest.raises(ModelLoadError, match="MODELPLANE_PRECISION must be one of"):
        LoadedModel.load(tmp_path / "metadata.json", precision="int4")
    with pytest.raises(ModelLoadError, match="package --quantize int8"):
        LoadedModel.load(tmp_path / "metadata.json", precision="int8")


def test_an_output_without_the_batch_dimension_is_refused(tmp_path: Path) -> None:
    from modelplane_runtime.package import PackageError, package_model

    class ColumnSums(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(0, keepdim=True)  # one row for the whole batch

    with pytest.raises(PackageError, match="first dimension"):
        package_model(ColumnSums(), {"x": torch.ones(2, 4)}, tmp_path, max_batch_size=8)
    assert not (tmp_path / "metadata.json").exists()


def test_max_batch_size_one_exports_a_one_row_program_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path), "--input", "x:FP32:-1,16"]
    assert main([*args, "--max-batch-size", "1"]) == 0, capsys.readouterr().err
    model = LoadedModel.load(tmp_path / "metadata.json")
    model.warm_up()
    x = np.ones((1, 16), np.float32)
    assert model.validate({"x": x}) == 1
    assert model.predict({"x": x})["output0"].shape == (1, 4)


def test_a_datatype_torch_cannot_hold_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path), "--input", "x:UINT16:-1,16"]
    assert main(args) == 1
    assert "unsupported datatype 'UINT16'" in capsys.readouterr().err
