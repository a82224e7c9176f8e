"""Loading a `.pt2` program onto its device, warming it up and running batches."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import bad_input
from .metadata import (
    NUMPY_DTYPES,
    TORCH_DATATYPES,
    MetadataError,
    ModelMetadata,
    TensorSpec,
    check_torch_version,
    read_metadata,
)

log = logging.getLogger(__name__)

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GPU_ONLY_PRECISIONS = {"float16", "bfloat16"}
WARM_UP_PASSES = 3
TORCH_DTYPES = {datatype: getattr(torch, name[6:]) for name, datatype in TORCH_DATATYPES.items()}

Arrays = dict[str, np.ndarray[Any, Any]]


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says why (it is shown in readiness)."""


def resolve_device(requested: str) -> torch.device:
    """`cpu` or `cuda`; a CUDA request without a usable GPU is an error, never a fallback."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                "MODELPLANE_DEVICE=cuda but no usable CUDA device is visible "
                "(torch.cuda.is_available() is false); refusing to fall back to CPU"
            )
        return torch.device("cuda", torch.cuda.current_device())
    raise ModelLoadError(f"MODELPLANE_DEVICE must be cpu or cuda, got {requested!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LoadedModel:
    """A torch.export program on its device, with the metadata that describes its tensors."""

    def __init__(
        self, metadata: ModelMetadata, module: torch.nn.Module, device: torch.device, precision: str
    ) -> None:
        self.metadata = metadata
        self.module = module
        self.device = device
        self.precision = precision
        self._compute_dtype = PRECISIONS[precision]
        self.output_datatypes = {spec.name: spec.datatype for spec in metadata.outputs}
        self._cast_inputs = self._compute_dtype != torch.float32
        self._on_gpu = device.type != "cpu"
        # `forward` rather than `__call__`: the unlifted program's pre-hooks only re-check
        # the argument structure (always positional tensors here) and cost more than a
        # small model's forward pass; its shape guards run inside `forward` regardless.
        self._forward = module.forward

    @classmethod
    def load(
        cls, metadata_path: Path, device: str = "cpu", precision: str = "float32"
    ) -> LoadedModel:
        """Read metadata, check it against this torch, load the program onto the device."""
        if precision not in (*PRECISIONS, "int8"):
            raise ModelLoadError(
                f"MODELPLANE_PRECISION must be one of {', '.join(PRECISIONS)}, int8; "
                f"got {precision!r}"
            )
        try:
            meta = read_metadata(metadata_path)
            check_torch_version(meta.torch_version, torch.__version__)
        except MetadataError as exc:
            raise ModelLoadError(str(exc)) from exc
        if meta.quantization:
            quantized = (
                f"this artifact is {meta.quantization}-quantized (`modelplane package "
                f"--quantize {meta.quantization}`)"
            )
            if device == "cuda":
                raise ModelLoadError(
                    f"{quantized}, which runs on the CPU only; serve it with "
                    "MODELPLANE_DEVICE=cpu (no GPU), or package the float model for a GPU"
                )
            if precision not in ("float32", meta.quantization):
                raise ModelLoadError(
                    f"{quantized}: it computes as packaged, so MODELPLANE_PRECISION must be "
                    f"float32 (the default) or {meta.quantization}, not {precision}"
                )
            precision = "float32"  # the program's own int8 layers; nothing is cast
        elif precision == "int8":
            raise ModelLoadError(
                "MODELPLANE_PRECISION=int8 needs an int8 artifact: a torch.export program "
                "cannot be re-quantized when it is loaded. Package the model with "
                "`modelplane package --quantize int8` and serve that artifact (on the CPU)"
            )
        torch_device = resolve_device(device)
        if precision in GPU_ONLY_PRECISIONS and torch_device.type != "cuda":
            raise ModelLoadError(f"precision {precision} needs MODELPLANE_DEVICE=cuda")
        artifact = metadata_path.parent / meta.artifact
        if not artifact.is_file():
            raise ModelLoadError(f"artifact {artifact} named by {metadata_path} does not exist")
        if meta.artifact_sha256 and _sha256(artifact) != meta.artifact_sha256:
            raise ModelLoadError(f"artifact {artifact} does not match the sha256 in its metadata")
        try:
            program = torch.export.load(str(artifact))
        except Exception as exc:  # torch raises many types for a corrupt or foreign file
            raise ModelLoadError(f"cannot load {artifact} with torch.export.load: {exc}") from exc
        user_inputs = len(program.graph_signature.user_inputs)
        if user_inputs != len(meta.inputs):
            raise ModelLoadError(
                f"metadata lists {len(meta.inputs)} inputs but the program takes {user_inputs}"
            )
        module = program.module().to(torch_device)
        if precision != "float32":
            module = module.to(PRECISIONS[precision])
        _bind_attributes(module)
        log.info(
            "loaded %s on %s (%s%s)",
            artifact,
            torch_device,
            precision,
            f", {meta.quantization} quantized" if meta.quantization else "",
        )
        return cls(meta, module, torch_device, precision)

    def warm_up(self) -> float:
        """Run forward passes on zeros so the first request does not pay for lazy init;
        return the CPU seconds the last one took (a first estimate of the compute cost)."""
        arrays = {}
        for spec in self.metadata.inputs:
            shape = tuple(1 if d == -1 else d for d in spec.shape)
            arrays[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        elapsed = 0.0
        for _ in range(WARM_UP_PASSES):
            start = time.thread_time()
            self.predict(arrays)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.thread_time() - start
        return elapsed

    def validate(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> int:
        """Check names, dtypes and shapes against the metadata; return the batch size."""
        expected = {spec.name for spec in self.metadata.inputs}
        missing = sorted(expected - inputs.keys())
        unknown = sorted(inputs.keys() - expected)
        if missing or unknown:
            raise bad_input(
                f"model inputs are {sorted(expected)}; missing {missing}, unexpected {unknown}"
            )
        batch = -1
        for spec in self.metadata.inputs:
            array = inputs[spec.name]
            _check_shape(spec, array.shape)
            if array.dtype != NUMPY_DTYPES[spec.datatype]:
                raise bad_input(f"input {spec.name!r} must have datatype {spec.datatype}")
            if self.metadata.batched:
                rows = array.shape[0]
                if batch not in (-1, rows):
                    raise bad_input("all inputs must have the same batch size (dimension 0)")
                batch = rows
        if self.metadata.batched:
            if batch < 1 or batch > self.metadata.max_batch_size:
                raise bad_input(
                    f"batch size {batch} is outside 1..{self.metadata.max_batch_size} "
                    "(the model's max_batch_size)"
                )
            return batch
        return 1

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        """One forward pass over already validated arrays; outputs keyed by metadata name."""
        args = []
        for spec in self.metadata.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[spec.name]))
            if self._cast_inputs and tensor.is_floating_point():
                tensor = tensor.to(self._compute_dtype)
            if self._on_gpu:
                tensor = tensor.to(self.device, non_blocking=True)
            args.append(tensor)
        try:
            with torch.inference_mode():
                result = self._forward(*args)
        except AssertionError as exc:
            # A shape guard of the program that the metadata could not express.
            if str(exc).startswith("Guard failed"):
                raise bad_input(f"the model rejected the input: {exc}") from None
            raise
        outputs = _flatten_outputs(result)
        if len(outputs) != len(self.metadata.outputs):
            raise MetadataError(
                f"the program returned {len(outputs)} outputs; metadata lists "
                f"{len(self.metadata.outputs)}"
            )
        arrays: Arrays = {}
        for spec, tensor in zip(self.metadata.outputs, outputs, strict=True):
            want = TORCH_DTYPES[spec.datatype]
            if tensor.device.type != "cpu" or tensor.dtype != want:
                tensor = tensor.to("cpu", dtype=want)
            # Inference-mode tensors carry no autograd history: no detach needed.
            arrays[spec.name] = tensor.numpy()
        return arrays


def _bind_attributes(module: torch.nn.Module) -> None:
    """Make every submodule, parameter and buffer a plain instance attribute.

    nn.Module keeps them in private dicts reached through `Module.__getattr__`, and the
    program's generated forward looks every weight up that way on every call: for a small
    model that is a quarter of the forward pass. The served module is never changed after
    loading (devices and dtypes are applied before this), so the cached entries stay the
    same objects the module's dicts hold.
    """
    guards = _plain_guards(module)
    for sub in module.modules():
        for members in (sub._modules, sub._parameters, sub._buffers):
            sub.__dict__.update(
                {name: value for name, value in members.items() if value is not None}
            )
    if guards is not None:
        # An instance attribute, not a method: called as `self._guards_fn(x)` it gets x only.
        module.__dict__["_guards_fn"] = guards


def _plain_guards(module: torch.nn.Module) -> Any:
    """The program's input guards as a plain function, when they can be found.

    torch.export wraps them in a submodule whose call enters a dynamo config patch (for
    re-tracing the program), which costs several times the checks themselves. The checks
    are kept; only the wrapper goes. A torch whose wrapper looks different keeps it.
    """
    wrapper = getattr(getattr(module, "_guards_fn", None), "forward", None)
    code, closure = getattr(wrapper, "__code__", None), getattr(wrapper, "__closure__", None)
    if code is None or not closure:
        return None
    cells = dict(zip(code.co_freevars, closure, strict=False))
    checks = cells["func"].cell_contents if "func" in cells else None
    return checks if callable(checks) else None


def _check_shape(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        want = list(spec.shape)
        raise bad_input(f"input {spec.name!r} must have shape {want}, got {list(shape)}")


def _flatten_outputs(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, list | tuple):
        return [t for t in result if isinstance(t, torch.Tensor)]
    if isinstance(result, dict):
        return [t for t in result.values() if isinstance(t, torch.Tensor)]
    raise TypeError(f"unsupported model output type {type(result).__name__}")
