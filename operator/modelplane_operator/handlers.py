"""kopf wiring: every relevant change triggers a reconcile of its ModelDeployment.

Handlers are ``on.event``, not kopf's change-detecting create/update handlers
(which store progress on the object) nor timers (which add a finalizer): the
operator writes nothing when nothing changed. The ModelDeployment, its
Deployment and Service, and its pods all lead to ``reconcile`` of the owner,
always with the newest copy of the owner from the index; reconciles of one
object are serialised. A slow resync loop covers changes no watch announces.
"""

from __future__ import annotations

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
from .metrics import RECONCILE_ERRORS, RECONCILE_SECONDS, RECONCILES
from .reconcile import reconcile
from .spec import GROUP, PLURAL, VERSION

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
Key = tuple[str, str]


class _State:
    config: ClassVar[OperatorConfig] = OperatorConfig()
    kube: ClassVar[Kube | None] = None
    resync_seconds: ClassVar[float] = 120.0
    peering_lifetime: ClassVar[int] = 15
    reconciles: ClassVar[int] = 0  # finished, for the idle-time heap trim
    index: ClassVar[kopf.Index[Any, Any] | None] = None
    guard: ClassVar[threading.Lock] = threading.Lock()
    running: ClassVar[set[Key]] = set()  # keys being reconciled now
    dirty: ClassVar[set[Key]] = set()  # keys that changed while being reconciled
    seen: ClassVar[dict[str, str]] = {}  # uid -> resourceVersion last handled
    # The status this operator last wrote, per object: watch events may lag behind it.
    written: ClassVar[dict[Key, tuple[str, Mapping[str, Any]]]] = {}
    # Wake-ups for deadlines and canary pauses, which no watch event announces.
    timers: ClassVar[dict[Key, threading.Timer]] = {}


def configure(
    config: OperatorConfig, resync_seconds: float = 120.0, peering_lifetime: int = 15
) -> None:
    """Set the operator-wide settings (called by the CLI before kopf starts)."""
    _State.config = config
    _State.resync_seconds = resync_seconds
    _State.peering_lifetime = peering_lifetime


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # the operator posts its own, phase-change events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 8
    # A replica that dies without saying goodbye (SIGKILL, a lost node) is presumed dead
    # this long after its last keep-alive; its standby takes over then.
    settings.peering.lifetime = _State.peering_lifetime
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    _State.kube = Kube(client.ApiClient(), _State.config.field_manager)


def _latest(key: Key, fallback: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if _State.index is not None:
        for body in _State.index.get(key, []):
            return dict(body)
    return fallback


def _run(key: Key, fallback: Mapping[str, Any] | None, logger: Any) -> None:
    """Reconcile ``key``; events arriving meanwhile coalesce into one more pass.

    A burst of pod events (a rollout produces many) then costs two reconciles, not
    one per event: the one running and one after it that sees the latest state.
    """
    with _State.guard:
        if key in _State.running:
            _State.dirty.add(key)
            return
        _State.running.add(key)
    try:
        while True:
            _reconcile_once(key, fallback, logger)
            with _State.guard:
                if key not in _State.dirty:
                    _State.running.discard(key)
                    return
                _State.dirty.discard(key)
    except BaseException:
        with _State.guard:
            _State.running.discard(key)
            _State.dirty.discard(key)
        raise


def _reconcile_once(key: Key, fallback: Mapping[str, Any] | None, logger: Any) -> None:
    _State.reconciles += 1
    kube = _State.kube
    assert kube is not None, "startup handler has not run"
    with RECONCILE_SECONDS.time():
        body = _latest(key, fallback)
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
            logger.warning("reconcile deferred: %s (retried on the next change or resync)", exc)
            return
        except ApiException as exc:
            message = api_message(exc)
            if exc.status == 404 or "being terminated" in message:
                # The object or its namespace is going away: nothing left to reconcile.
                logger.debug("reconcile skipped: %s", message)
                return
            RECONCILE_ERRORS.labels(kind=f"http-{exc.status}").inc()
            RECONCILES.labels(result="error").inc()
            logger.warning("reconcile failed: API answered %s: %s", exc.status, message)
            return
        except Exception:
            RECONCILE_ERRORS.labels(kind="unexpected").inc()
            RECONCILES.labels(result="error").inc()
            logger.exception("reconcile failed")
            return
        _State.written[key] = (uid, outcome.status)
        _requeue(key, outcome.requeue_after, logger)
        RECONCILES.labels(result=outcome.result).inc()
        if outcome.result != "unchanged":
            ms = 1000 * (time.monotonic() - started)
            logger.info("reconciled (%s) in %.0f ms", outcome.result, ms)


def _requeue(key: Key, delay: float | None, logger: Any) -> None:
    old = _State.timers.pop(key, None)
    if old is not None:
        old.cancel()
    if delay is not None:
        timer = threading.Timer(delay, _run, args=(key, None, logger))
        timer.daemon = True
        _State.timers[key] = timer
        timer.start()


@kopf.index(GROUP, VERSION, PLURAL)
def modeldeployments(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The latest ModelDeployments, so that child events can find their owner."""
    return {(namespace, name): dict(body)}


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_modeldeployment(
    type: str | None, body: kopf.Body, name: str, namespace: str | None, logger: Any, **kwargs: Any
) -> None:
    _State.index = kwargs["modeldeployments"]
    key = (namespace or "", name)
    if type == "DELETED":
        _forget(body)
        _State.written.pop(key, None)
        _requeue(key, None, logger)
        return  # owner references let the garbage collector remove the children
    if _already_seen(body):
        return
    _run(key, dict(body), logger)


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
def on_child(
    type: str | None, body: kopf.Body, namespace: str | None, logger: Any, **kwargs: Any
) -> None:
    _State.index = kwargs["modeldeployments"]
    if type == "DELETED":
        _forget(body)
    elif _already_seen(body):
        return
    parent = (body.get("metadata", {}).get("labels") or {}).get(DEPLOYMENT_LABEL)
    if parent and namespace:
        _run((namespace, parent), None, logger)


def _resync_forever(logger: Any) -> None:
    while True:
        time.sleep(_State.resync_seconds)
        index = _State.index
        for key in list(index or ()):
            _run(key, None, logger)


@kopf.on.startup()
def _start_resync(logger: Any, **_: Any) -> None:
    threading.Thread(target=_resync_forever, args=(logger,), name="resync", daemon=True).start()
    if os.environ.get("MODELPLANE_MALLOC_TRIM", "1") != "0":
        memory.trim_when_idle(lambda: not _State.running, lambda: _State.reconciles)
