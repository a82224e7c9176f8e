"""kopf wiring: every relevant change triggers a reconcile of its ModelDeployment.

Handlers are ``on.event``, not kopf's change-detecting create/update handlers
(which store progress on the object) nor timers (which add a finalizer): the
operator writes nothing when nothing changed. The ModelDeployment, its
Deployment and Service, and its pods only mark their owner's key on the
controller's work queue; its threads reconcile each key with the newest copy of
the owner from the index, one at a time per key. A slow resync loop covers changes
no watch announces. The one ``Controller`` lives in kopf's operator memo
(``kopf.run(memo=memo(controller))``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from kubernetes import client
from kubernetes import config as kube_config

from . import memory
from .controller import Controller
from .kube import Kube
from .manifests import DEPLOYMENT_LABEL, MANAGED_BY
from .spec import GROUP, PLURAL, VERSION

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


def memo(controller: Controller) -> kopf.Memo:
    """The operator memo that carries ``controller`` to every handler."""
    return kopf.Memo(controller=controller)


def _controller(memo: kopf.Memo) -> Controller:
    controller = memo.get("controller")
    assert isinstance(controller, Controller), "kopf.run needs memo=handlers.memo(...)"
    return controller


class _PeeringPause(logging.Filter):
    """Follows kopf's peering decisions, which it announces only in its log.

    kopf stops a paused replica's watches, but not the work queue's timers and resync:
    without this, a standby would reconcile from the copies it held when it paused
    and undo what the active replica does.
    """

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("Pausing operations", "Pausing all operators")):
            self.controller.pause()
        elif message.startswith("Resuming operations"):
            self.controller.resume()
        return True


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    controller = _controller(memo)
    settings.posting.enabled = False  # the operator posts its own, phase-change events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Handlers only mark keys; reconciles run on the work queue's own threads.
    settings.execution.max_workers = 2
    # A replica that dies without saying goodbye (SIGKILL, a lost node) is presumed dead
    # this long after its last keep-alive; its standby takes over then.
    settings.peering.lifetime = controller.peering_lifetime
    logging.getLogger("kopf._core.engines.peering").addFilter(_PeeringPause(controller))
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    controller.start(Kube(client.ApiClient(), controller.config.field_manager))


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
    type: str | None,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    controller = _controller(memo)
    controller.index = kwargs["modeldeployments"]
    key = (namespace or "", name)
    if type == "DELETED":
        controller.deleted(key, body)
    elif not controller.seen.already(body):
        controller.enqueue(key)


@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY})
@kopf.on.event("", "v1", "services", labels={MANAGED_BY_LABEL: MANAGED_BY})
@kopf.on.event("", "v1", "pods", labels={DEPLOYMENT_LABEL: kopf.PRESENT})
async def on_child(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    controller = _controller(memo)
    controller.index = kwargs["modeldeployments"]
    if type == "DELETED":
        controller.seen.forget(body)
    elif controller.seen.already(body):
        return
    parent = (body.get("metadata", {}).get("labels") or {}).get(DEPLOYMENT_LABEL)
    if parent and namespace:
        controller.enqueue((namespace, parent))


@kopf.on.startup()
def _start_resync(memo: kopf.Memo, **_: Any) -> None:
    controller = _controller(memo)
    threading.Thread(target=controller.resync_forever, name="resync", daemon=True).start()
    queue = controller.queue
    if queue is not None and os.environ.get("MODELPLANE_MALLOC_TRIM", "1") != "0":
        memory.trim_when_idle(queue.idle, lambda: queue.processed)
