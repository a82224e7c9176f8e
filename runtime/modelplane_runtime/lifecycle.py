"""The one model a runtime process serves, through its life: waiting for files, loading,
warming up, ready, draining on SIGTERM, or failed with the reason (and, with
MODELPLANE_EXIT_ON_ERROR, a termination message and exit code 1)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .batcher import DynamicBatcher
from .config import Settings
from .errors import ErrorKind, RuntimeServingError
from .executor import Executor, RequestExecutor
from .metadata import METADATA_FILE, find_metadata
from .metrics import Metrics
from .model import LoadedModel, ModelLoadError
from .termination import write_termination_message

log = logging.getLogger(__name__)

WAIT_FOR_FILES_S = 0.5
# Files written this recently may still be half-written: a load that fails is retried.
SETTLE_S = 2.0
# A folder that holds files but no metadata.json, unchanged this long, is not a model.
NO_METADATA_AFTER_S = 30.0


def _recently_changed(folder: Path, seconds: float) -> bool:
    """Whether anything directly in `folder` was modified within the last `seconds`."""
    try:
        newest = max((p.stat().st_mtime for p in folder.iterdir()), default=0.0)
    except OSError:
        return False
    return time.time() - newest < seconds


def _not_a_model(model_dir: Path) -> str | None:
    """Why a folder that has files but no metadata.json will never be a model (None while
    it is empty or still changing: the files may be on their way)."""
    if not model_dir.is_dir():
        return None
    children = sorted(model_dir.iterdir())
    if not children or any(
        _recently_changed(folder, NO_METADATA_AFTER_S)
        for folder in (model_dir, *(c for c in children if c.is_dir()))
    ):
        return None
    names = [c.name for c in children]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return (
        f"found no model in {model_dir}: it holds {shown} but no {METADATA_FILE} (directly or "
        "in its only subfolder); the model URI must point at what `modelplane package` wrote"
    )


class ModelService:
    """The one model this process serves: its loading state, executor and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: LoadedModel | None = None
        self.executor: RequestExecutor | None = None
        self.ready = False
        self.draining = False  # SIGTERM received: not ready, keep-alive connections close
        self.state = "starting"
        self.exit_code = 0  # what the process exits with once the server has stopped
        self.stop_server: Callable[[], None] = lambda: None  # set by serve()
        gpu = settings.device == "cuda"
        self.metrics = Metrics(settings.model_name, settings.model_version, gpu)

    async def load(self) -> None:
        """Wait for the model files, load, warm up, then turn ready. A failure stays
        not-ready with the reason, and ends the process when exit_on_error is set."""
        settings = self.settings
        try:
            while (path := find_metadata(settings.model_dir)) is None:
                self.state = f"waiting for model files (metadata.json) in {settings.model_dir}"
                not_a_model = _not_a_model(settings.model_dir)
                if not_a_model:
                    self._load_failed(not_a_model)
                    return
                await asyncio.sleep(WAIT_FOR_FILES_S)
        except OSError as exc:
            self._load_failed(f"cannot read the model folder {settings.model_dir}: {exc}")
            return
        while True:
            self.state = "loading"
            try:
                model = await asyncio.to_thread(
                    LoadedModel.load, path, settings.device, settings.precision
                )
                break
            except ModelLoadError as exc:
                if _recently_changed(path.parent, SETTLE_S):
                    # Still being copied in (outside Kubernetes, where no init container
                    # finishes first): a half-written file is no verdict yet.
                    self.state = "waiting for the model files to settle"
                    await asyncio.sleep(SETTLE_S)
                    continue
                self._load_failed(f"failed to load: {exc}")
                return
            except Exception as exc:
                log.exception("model %s failed to load", settings.model_name)
                self._load_failed(f"failed to load: {type(exc).__name__}: {exc}")
                return
        try:
            self.state = "warming up"
            typical_s = await asyncio.to_thread(model.warm_up)
        except Exception as exc:
            log.exception("model %s failed to warm up", settings.model_name)
            self._load_failed(f"failed to warm up: {type(exc).__name__}: {exc}")
            return
        meta = model.metadata
        executor: RequestExecutor
        if settings.batching and meta.batched:
            size = min(settings.max_batch_size, meta.max_batch_size)
            delay_s = settings.max_queue_delay_ms / 1000
            executor = DynamicBatcher(model.predict, size, delay_s, typical_s)
        else:
            executor = Executor(model.predict, typical_s)
        executor.on_batch = self.metrics.batch_executed
        self.metrics.count_queue(executor.pending, lambda: executor.in_flight.count)
        executor.inline_allowed = model.device.type == "cpu"
        await executor.start()
        self.model, self.executor = model, executor
        self.ready = True
        self.state = "ready"
        log.info("model %s version %s is ready", settings.model_name, settings.model_version)

    def _load_failed(self, reason: str) -> None:
        name = self.settings.model_name
        self.state = reason
        log.error("model %s is not ready: %s", name, reason)
        if not self.settings.exit_on_error:
            return
        self.exit_code = 1
        try:
            write_termination_message(f"model {name!r} {reason}", self.settings.termination_log)
            log.error(
                "exiting: the model cannot be served (MODELPLANE_EXIT_ON_ERROR=false keeps "
                "the server up, not ready)"
            )
        finally:
            self.stop_server()

    async def close(self) -> None:
        if self.executor is not None:
            await self.executor.stop()

    def check_name(self, name: str, version: str | None) -> None:
        if name != self.settings.model_name:
            raise RuntimeServingError(ErrorKind.NOT_FOUND, f"unknown model {name!r}")
        if version is not None and version != self.settings.model_version:
            raise RuntimeServingError(
                ErrorKind.NOT_FOUND, f"unknown version {version!r} of model {name!r}"
            )

    def check_not_draining(self) -> None:
        """Readiness only: a draining server still answers inference requests."""
        if self.draining:
            name = self.settings.model_name
            raise RuntimeServingError(ErrorKind.NOT_READY, f"model {name!r} is shutting down")

    def require_ready(self) -> tuple[LoadedModel, RequestExecutor]:
        if not self.ready or self.model is None or self.executor is None:
            name = self.settings.model_name
            raise RuntimeServingError(
                ErrorKind.NOT_READY, f"model {name!r} is not ready: {self.state}"
            )
        return self.model, self.executor
