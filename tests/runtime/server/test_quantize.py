"""`modelplane package --quantize int8`: accuracy, batch independence, serving and refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as triton

from modelplane_runtime.cli import main
from modelplane_runtime.metadata import MetadataError, read_metadata
from modelplane_runtime.model import LoadedModel, ModelLoadError
from modelplane_runtime.package import PackageError, load_factory, package_model
from modelplane_runtime.quantize import Int8Linear, quantize_int8
from runtimekit import EXAMPLES, StartServer


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _package_pair(tmp_path: Path, factory: str, width: int) -> tuple[LoadedModel, LoadedModel]:
    """The same weights packaged as float32 and as int8, loaded by the runtime."""
    torch.manual_seed(0)
    module = load_factory(f"{EXAMPLES}:{factory}")()
    example = {"x": torch.randn(2, width)}
    package_model(module, example, tmp_path / "int8", max_batch_size=64, quantize="int8")
    # The caller's module is left as it was: float Linear layers, packaged here after.
    assert not any(isinstance(m, Int8Linear) for m in module.modules())
    package_model(module, example, tmp_path / "float", max_batch_size=64)
    return (
        LoadedModel.load(tmp_path / "float" / "metadata.json"),
        LoadedModel.load(tmp_path / "int8" / "metadata.json"),
    )


def test_int8_program_stays_close_to_float_and_is_recorded(tmp_path: Path) -> None:
    reference, quantized = _package_pair(tmp_path, "compute_mlp", 512)
    assert quantized.metadata.quantization == "int8"
    assert reference.metadata.quantization == ""
    # Only aten ops in the program: it loads with torch alone, and holds int8 weights.
    weights = dict(quantized.module.named_buffers())
    assert weights and all(
        t.dtype == torch.int8 for name, t in weights.items() if name.endswith("weight_int8")
    )
    assert not any(p.dtype == torch.float32 and p.dim() == 2 for p in weights.values())
    x = {"x": np.random.default_rng(0).standard_normal((64, 512), dtype=np.float32)}
    want, got = reference.predict(x)["output0"], quantized.predict(x)["output0"]
    assert got.dtype == np.float32 and got.shape == want.shape
    error = _relative_error(got, want)
    # 8 bits per value over three layers: about 1.5% here. Bound it, and make sure it is
    # really the quantized program that answered (exactly equal would mean it is not).
    assert 1e-4 < error < 0.05, error


def test_each_row_is_independent_of_the_batch_it_runs_in(tmp_path: Path) -> None:
    _, quantized = _package_pair(tmp_path, "tiny_mlp", 16)
    rows = np.random.default_rng(1).standard_normal((9, 16), dtype=np.float32)
    rows[3] = 0.0  # an all-zero row quantizes to zeros, not NaN
    rows[5] *= 1000.0  # a row far larger than the others does not change their scale
    together = quantized.predict({"x": rows})["output0"]
    alone = np.concatenate([quantized.predict({"x": rows[i : i + 1]})["output0"] for i in range(9)])
    assert np.isfinite(together).all()
    np.testing.assert_array_equal(together, alone)


def test_int8_linear_keeps_leading_dimensions_and_works_without_bias() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 8, bias=False)
    quantized = Int8Linear(linear)
    x = torch.randn(3, 5, 24)
    with torch.inference_mode():
        want, got = linear(x), quantized(x)
    assert got.shape == (3, 5, 8) and got.dtype == torch.float32
    assert _relative_error(got.numpy(), want.numpy()) < 0.03


def test_a_bare_linear_is_replaced_and_a_module_without_one_is_refused(tmp_path: Path) -> None:
    module, replaced = quantize_int8(torch.nn.Linear(4, 2))
    assert replaced == 1 and isinstance(module, Int8Linear)

    class Doubles(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(PackageError, match="has none"):
        package_model(Doubles(), {"x": torch.ones(2, 4)}, tmp_path, quantize="int8")
    with pytest.raises(PackageError, match="quantize must be one of"):
        package_model(Doubles(), {"x": torch.ones(2, 4)}, tmp_path, quantize="int4")
    assert not (tmp_path / "metadata.json").exists()


def test_cli_quantizes_and_an_int8_artifact_refuses_a_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path), "--quantize", "int8"])
    assert code == 0, capsys.readouterr().err
    assert "int8 quantized" in capsys.readouterr().out
    metadata = tmp_path / "metadata.json"
    assert json.loads(metadata.read_text())["quantization"] == "int8"
    # Refused before any CUDA lookup, so the reason is the same with or without a GPU.
    with pytest.raises(ModelLoadError, match="runs on the CPU only"):
        LoadedModel.load(metadata, device="cuda")
    # It computes as packaged: int8 (or the default float32) is the only precision that
    # fits, and the message does not send the user to a GPU it cannot use.
    assert LoadedModel.load(metadata, precision="int8").metadata.quantization == "int8"
    with pytest.raises(ModelLoadError, match="float32 \\(the default\\) or int8, not bfloat16"):
        LoadedModel.load(metadata, precision="bfloat16")


class AttentionBlock(torch.nn.Module):
    """Self-attention and an MLP, as in a transformer block."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(width, 4, batch_first=True)
        self.up = torch.nn.Linear(width, 2 * width)
        self.down = torch.nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)
        hidden = x + attended
        return hidden + self.down(torch.relu(self.up(hidden)))


def test_attention_keeps_its_own_linear_and_a_shared_linear_stays_shared(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    block = AttentionBlock().eval()
    example = {"x": torch.randn(2, 5, 32)}
    meta = package_model(block, example, tmp_path / "int8", max_batch_size=8, quantize="int8")
    assert meta.quantization == "int8"
    # MultiheadAttention reads out_proj.weight itself: it stays float; the MLP is int8.
    quantized, replaced = quantize_int8(copy.deepcopy(block))
    assert replaced == 2
    assert isinstance(quantized.up, Int8Linear) and isinstance(quantized.down, Int8Linear)
    assert type(quantized.attention.out_proj) is not Int8Linear
    model = LoadedModel.load(tmp_path / "int8" / "metadata.json")
    x = np.random.default_rng(3).standard_normal((3, 5, 32), dtype=np.float32)
    with torch.inference_mode():
        want = block(torch.from_numpy(x)).numpy()
    assert _relative_error(model.predict({"x": x})["output0"], want) < 0.05

    shared = torch.nn.Linear(8, 8)
    twice = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    twice, replaced = quantize_int8(twice)
    assert replaced == 1 and twice[0] is twice[2] and isinstance(twice[0], Int8Linear)


def test_a_module_reading_a_linear_weight_directly_gets_a_hint(tmp_path: Path) -> None:
    class TiedHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.embed(x) @ self.embed.weight  # weight tying reads .weight

    with pytest.raises(PackageError, match="read a Linear layer's weight"):
        package_model(TiedHead(), {"x": torch.ones(2, 4)}, tmp_path, quantize="int8")
    package_model(TiedHead(), {"x": torch.ones(2, 4)}, tmp_path)  # fine without


def test_metadata_without_or_with_null_quantization_is_a_float_program(tmp_path: Path) -> None:
    assert main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path)]) == 0
    metadata = tmp_path / "metadata.json"
    raw = json.loads(metadata.read_text())
    for value in ("absent", None):
        if value == "absent":
            raw.pop("quantization", None)
        else:
            raw["quantization"] = value
        metadata.write_text(json.dumps(raw))
        assert read_metadata(metadata).quantization == ""
    with pytest.raises(ModelLoadError, match="needs an int8 artifact"):
        LoadedModel.load(metadata, precision="int8")


def test_unknown_quantization_in_metadata_is_refused(tmp_path: Path) -> None:
    assert main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(tmp_path)]) == 0
    metadata = tmp_path / "metadata.json"
    raw = json.loads(metadata.read_text())
    raw["quantization"] = "int4"
    metadata.write_text(json.dumps(raw))
    with pytest.raises(MetadataError, match="'int4' is not one this runtime serves"):
        read_metadata(metadata)


def test_server_serves_an_int8_artifact_with_batching(
    tmp_path: Path, start_server: StartServer
) -> None:
    _, quantized = _package_pair(tmp_path, "compute_mlp", 512)
    server = start_server(
        tmp_path / "int8",
        MODELPLANE_MODEL_NAME="compute",
        MODELPLANE_BATCHING="true",
        MODELPLANE_MAX_BATCH_SIZE="8",
    )
    server.wait_ready()
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    metadata = client.get_model_metadata("compute")
    assert metadata["parameters"]["quantization"] == "int8"
    x = np.random.default_rng(2).standard_normal((4, 512), dtype=np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    answer = client.infer("compute", [tensor]).as_numpy("output0")
    np.testing.assert_array_equal(answer, quantized.predict({"x": x})["output0"])
