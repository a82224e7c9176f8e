"""Precision benchmark: what float16/bfloat16 (GPU) and int8 (CPU) cost and buy.

    ~/.cache/modelplane/venv/bin/python benchmarks/runtime/precision.py

The compute-bound example MLP (512->2048->2048->512) is packaged once, then loaded by the
runtime's own `LoadedModel` at every precision the machine supports. For each it measures,
through `predict` (NumPy in, NumPy FP32 out: the path a request takes, transfers included):

- accuracy against float32 on the CPU, on a fixed batch of 256 standard-normal rows: the
  largest absolute error and the relative L2 error of the whole output;
- rows per second and the median latency at batch 1, 16, 64 and 256.

int8 is not a load-time setting: the same weights are packaged a second time with
`quantize="int8"` (what `modelplane package --quantize int8` does) and that artifact is
loaded as it is. A configuration the runtime refuses (float16/bfloat16 without CUDA) is
recorded with the runtime's own error message instead of numbers. Results go to
docs/benchmarks/precision.json and precision.md; ratios against float32 on the same device
are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "runtime"), str(REPO / "hack")]

from modelplane_runtime.model import LoadedModel, ModelLoadError  # noqa: E402
from modelplane_runtime.package import load_factory, package_model  # noqa: E402
from provenance import commit  # noqa: E402

BATCHES = (1, 16, 64, 256)
# name -> (factory in examples/models/mlp.py, input width, description)
MODELS = {
    "compute": ("compute_mlp", 512, "compute_mlp 512->2048->2048->512"),
    "tiny": ("tiny_mlp", 16, "tiny_mlp 16->64->4"),
}
CONFIGS = (
    ("cpu", "float32"),
    ("cpu", "int8"),
    ("cuda", "float32"),
    ("cuda", "float16"),
    ("cuda", "bfloat16"),
)


def build(work: Path, factory: str, width: int) -> dict[str, Path]:
    """The same weights packaged as a float program and as an int8 one."""
    module = load_factory(f"{REPO / 'examples/models/mlp.py'}:{factory}")()
    example = {"x": torch.randn(2, width)}
    artifacts = {}
    for quantize in ("", "int8"):
        out = work / factory / (quantize or "float")
        package_model(module, example, out, name=factory, max_batch_size=256, quantize=quantize)
        artifacts[quantize] = out / "metadata.json"
    return artifacts


def time_batches(model: LoadedModel, width: int, seconds: float) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(1)
    results = {}
    for batch in BATCHES:
        x = {"x": rng.standard_normal((batch, width), dtype=np.float32)}
        for _ in range(5):
            model.predict(x)
        latencies = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(latencies) < 20:
            start = time.perf_counter()
            model.predict(x)  # outputs are copied to the host: the call is synchronous
            latencies.append(time.perf_counter() - start)
        total = sum(latencies)
        results[str(batch)] = {
            "rows_per_s": batch * len(latencies) / total,
            "p50_ms": statistics.median(latencies) * 1000,
            "calls": len(latencies),
        }
    return results


def accuracy(
    model: LoadedModel, reference: np.ndarray, x: dict[str, np.ndarray]
) -> dict[str, float]:
    got = model.predict(x)["output0"]
    diff = got.astype(np.float64) - reference.astype(np.float64)
    return {
        "max_abs_error": float(np.abs(diff).max()),
        "relative_l2_error": float(np.linalg.norm(diff) / np.linalg.norm(reference)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured per batch size")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        for model_name, (factory, width, _) in MODELS.items():
            rows += measure_model(
                model_name, build(Path(work), factory, width), width, args.seconds
            )
    add_ratios(rows)
    report = {
        "commit": commit(),
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        },
        "models": {
            name: f"{text} (examples/models/mlp.py)" for name, (_, _, text) in MODELS.items()
        },
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "precision.md").write_text(markdown(report))
    print(markdown(report))


def measure_model(
    model_name: str, artifacts: dict[str, Path], width: int, seconds: float
) -> list[dict[str, Any]]:
    """Accuracy against float32 on the CPU and rows/s, for every configuration."""
    reference_model = LoadedModel.load(artifacts[""], device="cpu")
    x = {"x": np.random.default_rng(0).standard_normal((256, width), dtype=np.float32)}
    reference = reference_model.predict(x)["output0"]
    rows: list[dict[str, Any]] = []
    for device, precision in CONFIGS:
        row: dict[str, Any] = {"model": model_name, "device": device, "precision": precision}
        # int8 is a packaging option: the int8 artifact, loaded as it is.
        metadata = artifacts["int8" if precision == "int8" else ""]
        try:
            model = LoadedModel.load(metadata, device=device, precision=precision)
        except ModelLoadError as exc:
            row["refused"] = str(exc)
            rows.append(row)
            print(f"{model_name:8} {device:4} {precision:8} refused: {exc}")
            continue
        model.warm_up()
        row.update(accuracy(model, reference, x))
        row["batches"] = time_batches(model, width, seconds)
        rows.append(row)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed-up against float32 on the same device, per model and batch size."""
    baseline = {
        (r["model"], r["device"]): r for r in rows if r["precision"] == "float32" and "batches" in r
    }
    for row in rows:
        base = baseline.get((row["model"], row["device"]))
        if "batches" not in row or base is None:
            continue
        for batch, numbers in row["batches"].items():
            numbers["speedup_vs_float32"] = (
                numbers["rows_per_s"] / base["batches"][batch]["rows_per_s"]
            )


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Precision benchmark",
        "",
        f"Written by `benchmarks/runtime/precision.py` at commit `{report['commit']}`. Models: "
        + "; ".join(f"{name}: {text}" for name, text in report["models"].items())
        + f". torch {machine['torch']}, GPU: {machine['gpu'] or 'none'}, "
        f"{machine['cpu_threads']} CPU threads.",
        "",
        "Errors are against float32 on the CPU (256 rows); speed-up is rows/s against float32 "
        "on the same device.",
        "",
        "| model | device | precision | max abs error | relative L2 error | "
        + " | ".join(f"rows/s @{b} (speed-up)" for b in BATCHES)
        + " |",
        "| --- | --- | --- | --- | --- |" + " --- |" * len(BATCHES),
    ]
    for row in report["results"]:
        config = f"| {row['model']} | {row['device']} | {row['precision']} |"
        if "refused" in row:
            lines.append(
                f"{config} refused: {row['refused']} | | " + " | " * (len(BATCHES) - 1) + " |"
            )
            continue
        cells = []
        for batch in BATCHES:
            numbers = row["batches"][str(batch)]
            speedup = numbers.get("speedup_vs_float32")
            cells.append(
                f"{numbers['rows_per_s']:,.0f}" + (f" ({speedup:.2f}x)" if speedup else "")
            )
        lines.append(
            f"{config} {row['max_abs_error']:.2e} | "
            f"{row['relative_l2_error']:.2e} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
