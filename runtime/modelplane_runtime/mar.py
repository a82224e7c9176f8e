"""`modelplane package --format mar`: a packaged model folder as a TorchServe `.mar`.

The archive holds the folder's `model.pt2` and `metadata.json` and modelplane's TorchServe
handler (torchserve_handler.py), which answers Open Inference Protocol v2 JSON. It is made
by TorchServe's own torch-model-archiver (the `torchserve` extra), never by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import torchserve_handler
from .metadata import ARTIFACT_FILE, METADATA_FILE

MAR_SUFFIX = ".mar"


class ArchiveError(ValueError):
    """The folder cannot be archived as a `.mar`."""


def write_mar(folder: Path, export_dir: Path, name: str, version: str) -> Path:
    """Archive `folder` (model.pt2 + metadata.json) as `export_dir/<name>.mar`."""
    try:
        from model_archiver.model_archiver_config import ModelArchiverConfig  # type: ignore[import-untyped]
        from model_archiver.model_archiver_error import ModelArchiverError  # type: ignore[import-untyped]
        from model_archiver.model_packaging import generate_model_archive  # type: ignore[import-untyped]
    except ImportError:
        raise ArchiveError(
            "--format mar needs torch-model-archiver: pip install 'modelplane[torchserve]'"
        ) from None
    export_dir.mkdir(parents=True, exist_ok=True)
    config = ModelArchiverConfig(
        model_name=name,
        handler=torchserve_handler.__file__,
        version=version,
        serialized_file=str(folder / ARTIFACT_FILE),
        extra_files=str(folder / METADATA_FILE),
        export_path=str(export_dir),
        force=True,
    )
    # The archiver logs its progress through the root logger: quiet while it runs (its
    # errors reach the user as ours).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        generate_model_archive(config)
    except ModelArchiverError as exc:
        raise ArchiveError(f"torch-model-archiver: {exc}") from None
    finally:
        root.setLevel(level)
    return export_dir / f"{name}{MAR_SUFFIX}"
