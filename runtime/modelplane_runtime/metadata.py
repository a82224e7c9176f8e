"""Model metadata stored beside a `.pt2` artifact: tensor names, datatypes, shapes, limits.

The file (`metadata.json`) is written by `modelplane package`, checked when the runtime
loads the artifact and served by the model metadata endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

METADATA_FILE = "metadata.json"
ARTIFACT_FILE = "model.pt2"
FORMAT = "modelplane/v1"
PLATFORM = "pytorch_torch_export"
# "" is a float program; "int8" runs int8 matrix multiplies that only the CPU serves.
QUANTIZATIONS = ("", "int8")

# Open Inference Protocol datatypes and their numpy equivalents. BYTES is carried as an
# object array of `bytes`; BF16 has no numpy dtype and is used only inside the model.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
TORCH_DATATYPES = {
    "torch.bool": "BOOL",
    "torch.uint8": "UINT8",
    "torch.int8": "INT8",
    "torch.int16": "INT16",
    "torch.int32": "INT32",
    "torch.int64": "INT64",
    "torch.float16": "FP16",
    "torch.float32": "FP32",
    "torch.float64": "FP64",
}


class MetadataError(ValueError):
    """The metadata file is missing, malformed or contradicts the artifact."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One named input or output: datatype and shape (-1 marks a dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> TensorSpec:
        if not isinstance(raw, dict):
            raise MetadataError(f"{where} must be an object")
        name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
        if not isinstance(name, str) or not name:
            raise MetadataError(f"{where}.name must be a non-empty string")
        if datatype not in NUMPY_DTYPES:
            raise MetadataError(f"{where}.datatype {datatype!r} is not a supported datatype")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise MetadataError(f"{where}.shape must be a list of integers >= -1")
        return cls(name=name, datatype=str(datatype), shape=tuple(shape))


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to know about an artifact before loading it."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    torch_version: str
    artifact: str = ARTIFACT_FILE
    name: str = ""
    artifact_sha256: str = ""
    quantization: str = ""  # "int8": Linear layers quantized by `package --quantize int8`

    @property
    def batched(self) -> bool:
        """Whether dimension 0 of every input and output is a batch dimension."""
        return self.max_batch_size > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "platform": PLATFORM,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "torch_version": self.torch_version,
            "max_batch_size": self.max_batch_size,
            "quantization": self.quantization,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, raw: Any) -> ModelMetadata:
        if not isinstance(raw, dict):
            raise MetadataError("metadata must be a JSON object")
        if raw.get("format") != FORMAT:
            raise MetadataError(f"metadata format must be {FORMAT!r}, got {raw.get('format')!r}")
        inputs = raw.get("inputs")
        outputs = raw.get("outputs")
        if not isinstance(inputs, list) or not inputs:
            raise MetadataError("metadata.inputs must be a non-empty list")
        if not isinstance(outputs, list) or not outputs:
            raise MetadataError("metadata.outputs must be a non-empty list")
        max_batch = raw.get("max_batch_size", 0)
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 0:
            raise MetadataError("metadata.max_batch_size must be an integer >= 0")
        torch_version = raw.get("torch_version")
        if not isinstance(torch_version, str) or not torch_version:
            raise MetadataError("metadata.torch_version must name the torch that made the artifact")
        artifact = raw.get("artifact", ARTIFACT_FILE)
        if not isinstance(artifact, str) or "/" in artifact or artifact.startswith("."):
            raise MetadataError("metadata.artifact must be a file name beside metadata.json")
        quantization = raw.get("quantization") or ""
        if quantization not in QUANTIZATIONS:
            raise MetadataError(
                f"metadata.quantization {quantization!r} is not one this runtime serves "
                f"({', '.join(repr(q) for q in QUANTIZATIONS)})"
            )
        meta = cls(
            inputs=tuple(TensorSpec.from_json(t, f"inputs[{i}]") for i, t in enumerate(inputs)),
            outputs=tuple(TensorSpec.from_json(t, f"outputs[{i}]") for i, t in enumerate(outputs)),
            max_batch_size=max_batch,
            torch_version=torch_version,
            artifact=artifact,
            name=str(raw.get("name", "")),
            artifact_sha256=str(raw.get("artifact_sha256", "")),
            quantization=quantization,
        )
        if meta.batched:
            for spec in (*meta.inputs, *meta.outputs):
                if not spec.shape or spec.shape[0] != -1:
                    raise MetadataError(
                        f"{spec.name}: with max_batch_size > 0 dimension 0 must be -1 (the batch)"
                    )
        return meta


def find_metadata(model_dir: Path) -> Path | None:
    """`metadata.json` in the model folder, or in its only subfolder (an unpacked tarball)."""
    direct = model_dir / METADATA_FILE
    if direct.is_file():
        return direct
    if not model_dir.is_dir():
        return None  # not there yet: the caller keeps waiting
    nested = [p / METADATA_FILE for p in model_dir.iterdir() if p.is_dir()]
    found = [p for p in nested if p.is_file()]
    return found[0] if len(found) == 1 else None


def read_metadata(path: Path) -> ModelMetadata:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"cannot read {path}: {exc}") from exc
    return ModelMetadata.from_json(raw)


def write_metadata(path: Path, meta: ModelMetadata) -> None:
    """Write atomically so a watcher never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_torch_version(made_with: str, running: str) -> None:
    """Refuse an artifact from another torch major.minor: the .pt2 format is not stable
    across releases, and a silent mis-load is worse than a clear refusal."""

    def major_minor(version: str) -> tuple[str, ...]:
        return tuple(version.split("+", 1)[0].split(".")[:2])

    if major_minor(made_with) != major_minor(running):
        want = ".".join(major_minor(running))
        raise MetadataError(
            f"incompatible artifact: exported with torch {made_with}, but this runtime runs "
            f"torch {running} and loads only artifacts made with torch {want}.x; "
            f"re-run `modelplane package` with torch {want}"
        )
