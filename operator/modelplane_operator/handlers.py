"""kopf wiring: every relevant change triggers a reconcile of its ModelDeployment.

Handlers are ``on.event``, not kopf's change-detecting create/update handlers
(which store progress on the object) nor timers (which add a finalizer): the
operator writes nothing when nothing changed. The ModelDeployment, its
Deployment and Service, and its pods only mark their owner's key on a work
queue; its threads reconcile each key with the newest copy of the owner from
the index, one at a time per key. A slow resync loop covers changes no watch
announces.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import kopf
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from . import memory
from .config import OperatorConfig
from .kube import Kube, TransientApiError, api_message
from .manifests import DEPLOYMENT_LABEL, MANAGED_BY
from .metrics import (
    QUEUE_DEPTH,
    RECONCILE_ERRORS,
    RECONCILE_RETRIES,
    RECONCILE_SECONDS,
    RECONCILES,
)
from .reconcile import reconcile
from .spec import GROUP, PLURAL, VERSION
from .workqueue import ItemBackoff, WorkQueue

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
Key = tuple[str, str]


class _State:
    config: ClassVar[OperatorConfig] = OperatorConfig()
    kube: ClassVar[Kube | None] = None
    resync_seconds: ClassVar[float] = 120.0
    peering_lifetime: ClassVar[int] = 15
    workers: ClassVar[int] = 8
    index: ClassVar[kopf.Index[Any, Any] | None] = None
    queue: ClassVar[WorkQueue[Key] | None] = None
    backoff: ClassVar[ItemBackoff[Key]] = ItemBackoff()
    guard: ClassVar[threading.Lock] = threading.Lock()
    seen: ClassVar[dict[str, str]] = {}  # uid -> resourceVersion last handled
    # The status this operator last wrote, per object: watch events may lag behind it.
    written: ClassVar[dict[Key, tuple[str, Mapping[str, Any]]]] = {}
    # True while kopf's peering has paused this replica in favour of another one.
    paused: ClassVar[bool] = False


class _PeeringPause(logging.Filter):
    """Follows kopf's peering decisions, which it announces only in its log.

    kopf stops a paused replica's watches, but not the work queue's timers and resync:
    without this, a standby would reconcile from the copies it held when it paused
    and undo what the active replica does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("Pausing operations", "Pausing all operators")):
            _State.paused = True
            _State.written.clear()  # the active replica writes status meanwhile
        elif message.startswith("Resuming operations"):
            _State.paused = False
        return True


logging.getLogger("kopf._core.engines.peering").addFilter(_PeeringPause())


def configure(
    config: OperatorConfig,
    resync_seconds: float = 120.0,
    peering_lifetime: int = 15,
    workers: int = 8,
) -> None:
    """Set the operator-wide settings (called by the CLI before kopf starts)."""
    _State.config = config
    _State.resync_seconds = resync_seconds
    _State.peering_lifetime = peering_lifetime
    _State.workers = workers


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # the operator posts its own, phase-change events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Handlers only mark keys; reconciles run on the work queue's own threads.
    settings.execution.max_workers = 2
    # A replica that dies without saying goodbye (SIGKILL, a lost node) is presumed dead
    # this long after its last keep-alive; its standby takes over then.
    settings.peering.lifetime = _State.peering_lifetime
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    _State.kube = Kube(client.ApiClient(), _State.config.field_manager)
    if _State.queue is None:
        _State.queue = WorkQueue(_reconcile_key, workers=_State.workers)
        QUEUE_DEPTH.set_function(_State.queue.depth)


def _enqueue(key: Key) -> None:
    queue = _State.queue
    assert queue is not None, "startup handler has not run"
    queue.add(key)


def _latest(key: Key) -> Mapping[str, Any] | None:
    if _State.index is not None:
        for body in _State.index.get(key, []):
            return dict(body)
    return None


def _object_logger(key: Key) -> logging.LoggerAdapter[logging.Logger]:
    """Log lines about one ModelDeployment, formatted by kopf like its own (no k8s events)."""
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment"}
    ref |= {"namespace": key[0], "name": key[1]}
    return logging.LoggerAdapter(_OBJECT_LOG, {"k8s_ref": ref, "k8s_skip": True})


_OBJECT_LOG = logging.getLogger("kopf.objects")


def _reconcile_key(key: Key) -> None:
    with RECONCILE_SECONDS.time():
        _reconcile_once(key, _object_logger(key))


def _requeue_failed(key: Key) -> float:
    """Try a failed reconcile again after its exponential backoff; the delay."""
    delay = _State.backoff.failed(key)
    RECONCILE_RETRIES.inc()
    queue = _State.queue
    if queue is not None:
        queue.add_after(key, delay)
    return delay


def _reconcile_once(key: Key, logger: logging.LoggerAdapter[logging.Logger]) -> None:
    kube = _State.kube
    assert kube is not None, "startup handler has not run"
    if _State.paused:
        return  # kopf re-lists everything on resuming, and the resync covers the rest
    body = _latest(key)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    uid = str(body["metadata"].get("uid"))
    written = _State.written.get(key)
    known = written[1] if written and written[0] == uid else None
    started = time.monotonic()
    try:
        outcome = reconcile(body, kube, _State.config, known_status=known)
    except TransientApiError as exc:
        RECONCILE_ERRORS.labels(kind="transient").inc()
        RECONCILES.labels(result="error").inc()
        logger.warning("reconcile deferred: %s (retried in %.1f s)", exc, _requeue_failed(key))
        return
    except ApiException as exc:
        message = api_message(exc)
        if exc.status == 404 or "being terminated" in message:
            # The object or its namespace is going away: nothing left to reconcile.
            logger.debug("reconcile skipped: %s", message)
            return
        RECONCILE_ERRORS.labels(kind=f"http-{exc.status}").inc()
        RECONCILES.labels(result="error").inc()
        delay = _requeue_failed(key)
        logger.warning(
            "reconcile failed: API answered %s: %s (retried in %.1f s)", exc.status, message, delay
        )
        return
    except Exception:
        RECONCILE_ERRORS.labels(kind="unexpected").inc()
        RECONCILES.labels(result="error").inc()
        logger.exception("reconcile failed (retried in %.1f s)", _requeue_failed(key))
        return
    _State.backoff.forget(key)
    _State.written[key] = (uid, outcome.status)
    queue = _State.queue
    if queue is not None:
        queue.add_after(key, outcome.requeue_after)
    RECONCILES.labels(result=outcome.result).inc()
    if outcome.result != "unchanged":
        ms = 1000 * (time.monotonic() - started)
        logger.info("reconciled (%s) in %.0f ms", outcome.result, ms)


@kopf.index(GROUP, VERSION, PLURAL)
def modeldeployments(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The latest ModelDeployments, so that child events can find their owner.

    Field-manager bookkeeping is left out: the reconciler never reads it, and it is
    a large share of each body kept here.
    """
    latest = dict(body)
    latest["metadata"] = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    return {(namespace or "", name): latest}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_modeldeployment(
    type: str | None, body: kopf.Body, name: str, namespace: str | None, **kwargs: Any
) -> None:
    _State.index = kwargs["modeldeployments"]
    key = (namespace or "", name)
    if type == "DELETED":
        _forget(body)
        _State.written.pop(key, None)
        if _State.queue is not None:
            _State.queue.forget(key)
        return  # owner references let the garbage collector remove the children
    if _already_seen(body):
        return
    _enqueue(key)


def _already_seen(body: kopf.Body) -> bool:
    """True for an object version handled before: a watch re-list repeats every object.

    Without this, each periodic re-list of thousands of pods would queue thousands of
    reconciles that find nothing to do, and delay the ones that matter.
    """
    meta = body.get("metadata") or {}
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    if not uid or not version:
        return False
    with _State.guard:
        if _State.seen.get(uid) == version:
            return True
        _State.seen[uid] = version
    return False


def _forget(body: kopf.Body) -> None:
    with _State.guard:
        _State.seen.pop((body.get("metadata") or {}).get("uid", ""), None)


@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY})
@kopf.on.event("", "v1", "services", labels={MANAGED_BY_LABEL: MANAGED_BY})
@kopf.on.event("", "v1", "pods", labels={DEPLOYMENT_LABEL: kopf.PRESENT})
async def on_child(type: str | None, body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
    _State.index = kwargs["modeldeployments"]
    if type == "DELETED":
        _forget(body)
    elif _already_seen(body):
        return
    parent = (body.get("metadata", {}).get("labels") or {}).get(DEPLOYMENT_LABEL)
    if parent and namespace:
        _enqueue((namespace, parent))


def _resync_forever() -> None:
    while True:
        time.sleep(_State.resync_seconds)
        for key in list(_State.index or ()):
            _enqueue(key)


@kopf.on.startup()
def _start_resync(**_: Any) -> None:
    threading.Thread(target=_resync_forever, name="resync", daemon=True).start()
    queue = _State.queue
    if queue is not None and os.environ.get("MODELPLANE_MALLOC_TRIM", "1") != "0":
        memory.trim_when_idle(queue.idle, lambda: queue.processed)
