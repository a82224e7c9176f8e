"""The operator's one controller object: its settings, client, queue and caches.

Built once by the CLI and kept in kopf's operator memo, so the handlers share one
instance instead of class variables reassigned on every event, and a test builds its
own. It keys work by ModelDeployment, reconciles each key with the newest copy from
kopf's index, and requeues failures with a per-key exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from .config import OperatorConfig
from .kube import Kube, TransientApiError, api_message
from .metering import Meters
from .metrics import (
    QUEUE_DEPTH,
    RECONCILE_ERRORS,
    RECONCILE_RETRIES,
    RECONCILE_SECONDS,
    RECONCILES,
)
from .reconcile import reconcile
from .spec import GROUP, VERSION
from .workqueue import ItemBackoff, WorkQueue

Key = tuple[str, str]
_OBJECT_LOG = logging.getLogger("kopf.objects")


class Seen:
    """Object versions handled before: a watch re-list repeats every object.

    Without this, each periodic re-list of thousands of pods would queue thousands of
    reconciles that find nothing to do, and delay the ones that matter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, str] = {}  # uid -> resourceVersion last handled

    def already(self, body: Mapping[str, Any]) -> bool:
        """True for a version seen before; records it otherwise."""
        meta = body.get("metadata") or {}
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        if not uid or not version:
            return False
        with self._lock:
            if self._versions.get(uid) == version:
                return True
            self._versions[uid] = version
        return False

    def forget(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            self._versions.pop((body.get("metadata") or {}).get("uid", ""), None)


class Controller:
    def __init__(
        self,
        config: OperatorConfig | None = None,
        resync_seconds: float = 120.0,
        peering_lifetime: int = 15,
        workers: int = 8,
    ) -> None:
        self.config = config or OperatorConfig()
        self.resync_seconds = resync_seconds
        self.peering_lifetime = peering_lifetime
        self.workers = workers
        self.kube: Kube | None = None
        self.index: kopf.Index[Any, Any] | None = None
        self.queue: WorkQueue[Key] | None = None
        self.backoff: ItemBackoff[Key] = ItemBackoff()
        self.seen = Seen()
        # The status this operator last wrote, per object: watch events may lag behind it.
        self.written: dict[Key, tuple[str, Mapping[str, Any]]] = {}
        # True while kopf's peering has paused this replica in favour of another one.
        self.paused = False
        # Canary intervals and load windows, measured between reconciles.
        self.meters = Meters()

    def start(self, kube: Kube) -> None:
        """Connect and start the work queue's threads (kopf's startup)."""
        self.kube = kube
        if self.queue is None:
            self.queue = WorkQueue(self.reconcile_key, workers=self.workers)
            QUEUE_DEPTH.set_function(self.queue.depth)

    def pause(self) -> None:
        self.paused = True
        self.written.clear()  # the active replica writes status meanwhile

    def resume(self) -> None:
        self.paused = False

    def enqueue(self, key: Key) -> None:
        assert self.queue is not None, "startup handler has not run"
        self.queue.add(key)

    def deleted(self, key: Key, body: Mapping[str, Any]) -> None:
        """A ModelDeployment is gone: owner references let the GC remove its children."""
        self.seen.forget(body)
        self.meters.forget(str((body.get("metadata") or {}).get("uid", "")))
        self.written.pop(key, None)
        if self.queue is not None:
            self.queue.forget(key)

    def resync_forever(self) -> None:
        while True:
            time.sleep(self.resync_seconds)
            for key in list(self.index or ()):
                self.enqueue(key)

    def reconcile_key(self, key: Key) -> None:
        with RECONCILE_SECONDS.time():
            self._reconcile_once(key, _object_logger(key))

    def _latest(self, key: Key) -> Mapping[str, Any] | None:
        if self.index is not None:
            for body in self.index.get(key, []):
                return dict(body)
        return None

    def _requeue_failed(self, key: Key) -> float:
        """Try a failed reconcile again after its exponential backoff; the delay."""
        delay = self.backoff.failed(key)
        RECONCILE_RETRIES.inc()
        if self.queue is not None:
            self.queue.add_after(key, delay)
        return delay

    def _reconcile_once(self, key: Key, logger: logging.LoggerAdapter[logging.Logger]) -> None:
        kube = self.kube
        assert kube is not None, "startup handler has not run"
        if self.paused:
            return  # kopf re-lists everything on resuming, and the resync covers the rest
        body = self._latest(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        uid = str(body["metadata"].get("uid"))
        written = self.written.get(key)
        known = written[1] if written and written[0] == uid else None
        started = time.monotonic()
        try:
            outcome = reconcile(body, kube, self.config, known_status=known, meters=self.meters)
        except Exception as exc:
            self._failed(key, exc, logger)
            return
        self.backoff.forget(key)
        self.written[key] = (uid, outcome.status)
        if self.queue is not None:
            self.queue.add_after(key, outcome.requeue_after)
        RECONCILES.labels(result=outcome.result).inc()
        if outcome.result != "unchanged":
            ms = 1000 * (time.monotonic() - started)
            logger.info("reconciled (%s) in %.0f ms", outcome.result, ms)

    def _failed(
        self, key: Key, exc: Exception, logger: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        """Count a failed reconcile and requeue it, unless its object is going away."""
        if isinstance(exc, TransientApiError):
            kind, how = "transient", f"reconcile deferred: {exc}"
        elif isinstance(exc, ApiException):
            message = api_message(exc)
            if exc.status == 404 or "being terminated" in message:
                # The object or its namespace is going away: nothing left to reconcile.
                logger.debug("reconcile skipped: %s", message)
                return
            kind, how = (
                f"http-{exc.status}",
                f"reconcile failed: API answered {exc.status}: {message}",
            )
        else:
            kind, how = "unexpected", "reconcile failed"
        RECONCILE_ERRORS.labels(kind=kind).inc()
        RECONCILES.labels(result="error").inc()
        delay = self._requeue_failed(key)
        if kind == "unexpected":
            logger.exception("%s (retried in %.1f s)", how, delay, exc_info=exc)
        else:
            logger.warning("%s (retried in %.1f s)", how, delay)


def _object_logger(key: Key) -> logging.LoggerAdapter[logging.Logger]:
    """Log lines about one ModelDeployment, formatted by kopf like its own (no k8s events)."""
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment"}
    ref |= {"namespace": key[0], "name": key[1]}
    return logging.LoggerAdapter(_OBJECT_LOG, {"k8s_ref": ref, "k8s_skip": True})
