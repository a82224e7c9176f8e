"""`modelplane package`: an nn.Module factory plus example inputs -> `.pt2` + metadata.json.

This is the path from training to serving: the program is exported with torch.export,
dimension 0 becomes a dynamic batch dimension when a max batch size is given, and the
metadata records tensor names, datatypes, shapes (-1 for dynamic) and the torch version.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import importlib.util
import inspect
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from .mar import ArchiveError, write_mar
from .metadata import (
    ARTIFACT_FILE,
    METADATA_FILE,
    TORCH_DATATYPES,
    ModelMetadata,
    TensorSpec,
    write_metadata,
)
from .publish import PublishError, push_model
from .quantize import METHODS as QUANTIZE_METHODS
from .quantize import quantize_int8

EXAMPLE_BATCH = 2
EXAMPLE_DYNAMIC_DIM = 3


class PackageError(ValueError):
    """The module, its inputs or the options cannot be packaged."""


def _datatype(dtype: torch.dtype, where: str) -> str:
    datatype = TORCH_DATATYPES.get(str(dtype))
    if datatype is None:
        raise PackageError(f"{where}: torch dtype {dtype} has no Open Inference Protocol datatype")
    return datatype


def package_model(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    output_dir: Path,
    *,
    name: str = "",
    max_batch_size: int = 32,
    dynamic_dims: Mapping[str, Sequence[int]] | None = None,
    output_names: Sequence[str] | None = None,
    quantize: str = "",
) -> ModelMetadata:
    """Export `module` called positionally with `example_inputs` (in order) and write
    `model.pt2` and `metadata.json` into `output_dir`. Returns the metadata written.

    `quantize="int8"` exports a copy of the module whose Linear layers are int8 ones (see
    `quantize.py`); the program then runs on the CPU only."""
    _check_request(example_inputs, quantize, max_batch_size, dynamic_dims or {})
    if max_batch_size == 1:
        # No dynamic batch: the program is specialised to its example's rows, so one row.
        example_inputs = {n: t[:1] for n, t in example_inputs.items()}
    shapes, input_specs = _input_shapes(example_inputs, max_batch_size, dynamic_dims or {})
    program = _export(module.eval(), example_inputs, shapes, quantize)
    output_specs = _output_specs(program, output_names, max_batch_size)
    output_dir.mkdir(parents=True, exist_ok=True)
    artifact = output_dir / ARTIFACT_FILE
    torch.export.save(program, str(artifact))
    meta = ModelMetadata(
        inputs=tuple(input_specs),
        outputs=tuple(output_specs),
        max_batch_size=max_batch_size,
        torch_version=torch.__version__,
        artifact=ARTIFACT_FILE,
        name=name,
        artifact_sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
        quantization=quantize,
    )
    # Metadata last: its appearance marks a complete artifact for a waiting runtime.
    write_metadata(output_dir / METADATA_FILE, meta)
    return meta


def _check_request(
    example_inputs: Mapping[str, torch.Tensor],
    quantize: str,
    max_batch_size: int,
    dynamic_dims: Mapping[str, Sequence[int]],
) -> None:
    if not example_inputs:
        raise PackageError("at least one example input is needed")
    if quantize and quantize not in QUANTIZE_METHODS:
        raise PackageError(f"quantize must be one of {list(QUANTIZE_METHODS)}, got {quantize!r}")
    if max_batch_size < 0:
        raise PackageError("max batch size must be >= 0 (0: the model has no batch dimension)")
    unknown = sorted(set(dynamic_dims) - set(example_inputs))
    if unknown:
        raise PackageError(f"dynamic dimensions given for unknown inputs {unknown}")


def _input_shapes(
    example_inputs: Mapping[str, torch.Tensor],
    max_batch_size: int,
    dynamic_dims: Mapping[str, Sequence[int]],
) -> tuple[list[dict[int, Any]], list[TensorSpec]]:
    """torch.export's dynamic shapes and the inputs' metadata (-1: a dynamic dimension)."""
    batch_dim = torch.export.Dim("batch", min=1, max=max_batch_size) if max_batch_size > 1 else None
    shapes: list[dict[int, Any]] = []
    input_specs = []
    for input_name, tensor in example_inputs.items():
        dims: dict[int, Any] = {}
        shape = list(tensor.shape)
        if max_batch_size > 0:
            if tensor.dim() == 0:
                raise PackageError(f"input {input_name!r} is a scalar and has no batch dimension")
            if batch_dim is not None:
                dims[0] = batch_dim
            shape[0] = -1
        for index in dynamic_dims.get(input_name, ()):
            if not 0 <= index < tensor.dim() or (index == 0 and max_batch_size > 0):
                raise PackageError(f"input {input_name!r}: dynamic dimension {index} is invalid")
            dims[index] = torch.export.Dim(f"{input_name}_{index}", min=1)
            shape[index] = -1
        shapes.append(dims)
        datatype = _datatype(tensor.dtype, f"input {input_name!r}")
        input_specs.append(TensorSpec(input_name, datatype, tuple(shape)))
    return shapes, input_specs


def _export(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    shapes: list[dict[int, Any]],
    quantize: str,
) -> torch.export.ExportedProgram:
    if quantize:
        # A copy: the caller's module stays the float one it trained.
        module, replaced = quantize_int8(copy.deepcopy(module))
        if not replaced:
            raise PackageError(
                "--quantize int8 quantizes nn.Linear layers, and this module has none"
            )
    try:
        return torch.export.export(
            module, tuple(example_inputs.values()), dynamic_shapes=tuple(shapes)
        )
    except Exception as exc:  # torch.export raises many error types for untraceable code
        hint = (
            " (with --quantize int8: the module's code may read a Linear layer's weight "
            "or bias directly, which int8 layers do not have; package it without --quantize)"
            if quantize
            else ""
        )
        raise PackageError(f"torch.export failed: {exc}{hint}") from exc


def _output_specs(
    program: torch.export.ExportedProgram, names: Sequence[str] | None, max_batch_size: int
) -> list[TensorSpec]:
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    values = [arg.meta.get("val") for arg in output_node.args[0]]
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise PackageError("every model output must be a tensor")
    if names is None or not names:
        names = [f"output{i}" for i in range(len(values))]
    if len(names) != len(values):
        raise PackageError(f"{len(names)} output names given for {len(values)} outputs")
    # The inputs' batch dimension (a symbol, or 1 with max batch size 1): every output must
    # have it first, since the batcher splits outputs row by row; anything else would mix
    # clients' data.
    user_inputs = set(program.graph_signature.user_inputs)
    batch = next(
        n.meta["val"].shape[0]
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name in user_inputs
    )
    specs = []
    for out_name, value in zip(names, values, strict=True):
        assert isinstance(value, torch.Tensor)
        shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
        if max_batch_size > 0:
            if not shape:
                raise PackageError(f"output {out_name!r} is a scalar, not batched")
            if str(value.shape[0]) != str(batch):
                raise PackageError(
                    f"output {out_name!r} has first dimension {value.shape[0]} where the "
                    "batch should be: with a max batch size above 0, every output needs one "
                    "row per input row (use --max-batch-size 0 for a model without a batch "
                    "dimension)"
                )
            shape = (-1, *shape[1:])
        specs.append(TensorSpec(out_name, _datatype(value.dtype, f"output {out_name!r}"), shape))
    return specs


def load_factory(reference: str) -> Callable[..., Any]:
    """`package.module:callable` or `path/to/file.py:callable`."""
    target, sep, attribute = reference.rpartition(":")
    if not sep or not target or not attribute:
        raise PackageError(f"factory must be module:callable or file.py:callable: {reference}")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise PackageError(f"cannot import {target}")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = loaded
            spec.loader.exec_module(loaded)
        else:
            loaded = importlib.import_module(target)
    except (ImportError, OSError) as exc:
        raise PackageError(f"cannot import {target}: {exc}") from exc
    factory: Any = getattr(loaded, attribute, None)
    if not callable(factory):
        raise PackageError(f"{target} has no callable {attribute!r}")
    return cast(Callable[..., Any], factory)


def parse_input(text: str, batch: bool) -> tuple[str, torch.Tensor, list[int]]:
    """`name:DATATYPE:d0,d1,...` (-1 marks a dynamic dimension) -> an example tensor."""
    parts = text.split(":")
    if len(parts) != 3:
        raise PackageError(f"--input must be name:DATATYPE:shape, got {text!r}")
    input_name, datatype, raw_shape = parts
    if datatype not in TORCH_DATATYPES.values() or datatype == "BYTES":
        raise PackageError(f"--input {input_name}: unsupported datatype {datatype!r}")
    try:
        shape = [int(d) for d in raw_shape.split(",") if d.strip()]
    except ValueError:
        message = f"--input {input_name}: shape must be integers, got {raw_shape!r}"
        raise PackageError(message) from None
    dynamic = [i for i, d in enumerate(shape) if d == -1 and not (batch and i == 0)]
    sizes = [
        EXAMPLE_BATCH if batch and i == 0 else EXAMPLE_DYNAMIC_DIM if d == -1 else d
        for i, d in enumerate(shape)
    ]
    dtype = {v: k for k, v in TORCH_DATATYPES.items()}[datatype]
    torch_dtype = getattr(torch, dtype.removeprefix("torch."))
    if torch_dtype.is_floating_point:
        tensor = torch.randn(sizes).to(torch_dtype)
    else:
        tensor = torch.zeros(sizes, dtype=torch_dtype)
    return input_name, tensor, dynamic


def add_package_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "package",
        help="export an nn.Module to model.pt2 + metadata.json",
        description="Export FACTORY() with torch.export into OUTPUT (model.pt2, metadata.json).",
    )
    parser.add_argument("factory", help="module:callable or file.py:callable returning nn.Module")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        help="output folder (with --format mar: the folder the .mar is written to)",
    )
    parser.add_argument(
        "--format",
        choices=("folder", "mar"),
        default="folder",
        help="folder: model.pt2 + metadata.json (modelplane's runtime); mar: NAME.mar for "
        "TorchServe (spec.runtime.server.kind: torchserve), with modelplane's handler",
    )
    parser.add_argument("--version", default="1.0", help="the .mar's model version")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DATATYPE:SHAPE",
        help="an input, e.g. x:FP32:-1,16 (-1: dynamic). Without --input, the factory's "
        "module must define example_inputs() returning {name: tensor}",
    )
    parser.add_argument("--output-name", action="append", default=[], help="output tensor names")
    parser.add_argument("--max-batch-size", type=int, default=32, help="0: no batch dimension")
    parser.add_argument("--name", default="", help="model name recorded in the metadata")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_METHODS,
        default="",
        help="int8: int8 weights (per output channel) and activations (per row) for every "
        "nn.Linear; about 4x faster on the CPU for large layers, ~1-2%% relative error; "
        "the artifact then serves on the CPU only",
    )
    parser.add_argument(
        "--push",
        default="",
        metavar="oci://REGISTRY/REPOSITORY:TAG",
        help="then push OUTPUT there as an OCI image (its files at the image root, where "
        "an image volume or the storage initializer puts them in /mnt/models); prints "
        "the digest to pin",
    )
    parser.set_defaults(handler=_run_package)


def _examples(
    args: argparse.Namespace, factory: Callable[..., Any]
) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The example inputs (from --input, or the factory's example_inputs()) and their
    dynamic dimensions."""
    examples: dict[str, torch.Tensor] = {}
    dynamic: dict[str, list[int]] = {}
    if args.input:
        for text in args.input:
            input_name, tensor, dims = parse_input(text, args.max_batch_size > 0)
            examples[input_name] = tensor
            dynamic[input_name] = dims
        return examples, dynamic
    owner = sys.modules.get(getattr(factory, "__module__", "") or "")
    make = getattr(owner, "example_inputs", None)
    if not callable(make):
        raise PackageError("give --input, or define example_inputs() beside the factory")
    return dict(make()), dynamic


def _check_format(args: argparse.Namespace) -> None:
    if args.format != "mar":
        return
    if args.push:
        raise PackageError("--push takes the folder format; serve a .mar from a file or URL")
    if args.quantize:
        raise PackageError("--quantize int8 serves only on modelplane's runtime, not in a .mar")
    if not args.name:
        raise PackageError("--format mar needs --name: TorchServe serves the model by it")


def _run_package(args: argparse.Namespace) -> int:
    try:
        _check_format(args)
        factory = load_factory(args.factory)
        module = factory()
        if not isinstance(module, torch.nn.Module):
            raise PackageError(f"{args.factory} returned {type(module).__name__}, not nn.Module")
        examples, dynamic = _examples(args, factory)
        with tempfile.TemporaryDirectory(prefix="modelplane-package-") as scratch:
            folder = Path(scratch) if args.format == "mar" else args.output
            meta = package_model(
                module,
                examples,
                folder,
                name=args.name,
                max_batch_size=args.max_batch_size,
                dynamic_dims=dynamic,
                output_names=args.output_name,
                quantize=args.quantize,
            )
            if args.format == "mar":
                written = [write_mar(folder, args.output, args.name, args.version)]
            else:
                written = [args.output / ARTIFACT_FILE, args.output / METADATA_FILE]
    except (PackageError, ArchiveError) as exc:
        print(f"modelplane package: error: {exc}", file=sys.stderr)
        return 1
    params = inspect.signature(module.forward).parameters
    print(
        f"wrote {' and '.join(str(p) for p in written)}: inputs "
        f"{[t.name for t in meta.inputs]} (forward takes {list(params)}), outputs "
        f"{[t.name for t in meta.outputs]}, max_batch_size {meta.max_batch_size}, "
        f"torch {meta.torch_version}"
        + (f", {meta.quantization} quantized" if meta.quantization else "")
    )
    if args.push:
        try:
            pushed = push_model(args.output, args.push, meta)
        except PublishError as exc:
            print(f"modelplane package: push failed: {exc}", file=sys.stderr)
            return 1
        print(f"pushed {pushed.uri()}")
    return 0
