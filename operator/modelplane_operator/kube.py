"""The only module that talks to the API server.

Reads return plain JSON dicts (as the API sends them). Writes use server-side
apply under one field manager, forcing ownership of the fields the operator
manages so that drift is reverted; status goes through the status subresource.
Transient failures (conflicts, throttling, server errors) are retried briefly
and then surface as ``TransientApiError`` for the caller to retry later.
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .metrics import API_REQUESTS, API_WRITES
from .spec import GROUP, PLURAL, VERSION

T = TypeVar("T")
log = logging.getLogger(__name__)
RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
APPLY_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}",
}


class TransientApiError(RuntimeError):
    """The API server could not take the request now; try again later."""


class Kube:
    """Typed access to the few API calls the operator makes."""

    def __init__(self, api_client: client.ApiClient, field_manager: str) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.resource = client.ResourceV1Api(api_client)
        self.field_manager = field_manager
        self.instance = socket.gethostname()

    # ------------------------------------------------------------------ reads
    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: self.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
        )

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: self.core.read_namespaced_service(name, namespace, _preload_content=False)
        )

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A registry pull secret (only with the opt-in RBAC: rbac.registrySecrets)."""
        return self._get(
            lambda: self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        )

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp: Any = _retry(
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False
            )
        )
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def list_deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp: Any = _retry(
            lambda: self.apps.list_namespaced_deployment(
                namespace, label_selector=selector, _preload_content=False
            )
        )
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        for item in items:  # list items come without them; compare like a GET
            item.setdefault("apiVersion", "apps/v1")
            item.setdefault("kind", "Deployment")
        return items

    def list_nodes(self) -> list[dict[str, Any]]:
        resp: Any = _retry(lambda: self.core.list_node(_preload_content=False))
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def list_active_pods(self) -> list[dict[str, Any]]:
        """Pods of every namespace that still hold resources (for the GPU budget)."""
        resp: Any = _retry(
            lambda: self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
                _preload_content=False,
            )
        )
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    # Dynamic Resource Allocation (resource.k8s.io/v1): the device budget and status.
    def list_resource_slices(self) -> list[dict[str, Any]]:
        return _items(_retry(lambda: self.resource.list_resource_slice(_preload_content=False)))

    def list_device_classes(self) -> list[dict[str, Any]]:
        return _items(_retry(lambda: self.resource.list_device_class(_preload_content=False)))

    def list_all_resource_claims(self) -> list[dict[str, Any]]:
        """Claims of every namespace: the devices they hold are not free for anyone."""
        return _items(
            _retry(
                lambda: self.resource.list_resource_claim_for_all_namespaces(_preload_content=False)
            )
        )

    def list_resource_claims(self, namespace: str) -> list[dict[str, Any]]:
        return _items(
            _retry(
                lambda: self.resource.list_namespaced_resource_claim(
                    namespace, _preload_content=False
                )
            )
        )

    def list_claim_templates(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return _items(
            _retry(
                lambda: self.resource.list_namespaced_resource_claim_template(
                    namespace, label_selector=selector, _preload_content=False
                )
            )
        )

    def _get(self, call: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            resp = _retry(call)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj: dict[str, Any] = json.loads(resp.data)
        return obj

    # ----------------------------------------------------------------- writes
    def apply(self, obj: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``obj`` (a Deployment or Service) and return the result; a dry
        run only asks whether the API server would accept it."""
        meta = obj["metadata"]
        name, namespace, kind = meta["name"], meta["namespace"], obj["kind"]
        if kind not in APPLY_PATHS:
            raise ValueError(f"cannot apply a {kind}")
        # Sent as UTF-8 bytes, serialised here: the typed client methods json.dumps the body
        # with ASCII escapes, and characters beyond the BMP (an emoji in an annotation)
        # become UTF-16 surrogate pairs, which the API server's YAML decoder refuses.
        body = json.dumps(obj, ensure_ascii=False).encode()
        path = APPLY_PATHS[kind].format(namespace=namespace, name=name)
        query = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        headers = {"Content-Type": APPLY, "Accept": "application/json"}

        def call() -> Any:
            method, url, header_params, payload, _ = self.api_client.param_serialize(
                "PATCH", path, query_params=query, header_params=headers, body=body,
                auth_settings=["BearerToken"],
            )  # fmt: skip
            resp = self.api_client.call_api(method, url, header_params, payload)
            resp.read()  # type: ignore[no-untyped-call]
            if not 200 <= resp.status < 300:
                raise ApiException(http_resp=resp)
            return resp

        if not dry_run:
            API_WRITES.labels(kind=kind, verb="apply").inc()
        resp: Any = _retry(call)
        result: dict[str, Any] = json.loads(resp.data)
        return result

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set replicas through the scale subresource (the template stays untouched)."""
        API_WRITES.labels(kind="Deployment", verb="scale").inc()
        body: Any = {"spec": {"replicas": replicas}}
        _retry(
            lambda: self.apps.patch_namespaced_deployment_scale(
                name, namespace, body, field_manager=self.field_manager, _content_type=MERGE
            )
        )

    def delete_deployment(self, namespace: str, name: str, uid: str) -> None:
        """Delete a Deployment, but only the one with this uid (not a successor)."""
        API_WRITES.labels(kind="Deployment", verb="delete").inc()
        body: Any = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}

        def call() -> None:
            try:
                self.apps.delete_namespaced_deployment(name, namespace, body=body)
            except ApiException as exc:
                # Gone already, or a successor of the same name (the uid precondition
                # failed): nothing of ours to delete, and nothing to retry.
                if exc.status not in (404, 409):
                    raise

        _retry(call)

    def create_claim_template(self, obj: Mapping[str, Any], dry_run: bool = False) -> None:
        """Create a ResourceClaimTemplate (its spec is immutable: created, never patched);
        one that exists already is left as it is. A dry run only asks whether the API
        server would accept it (its CEL selectors compile, say)."""
        if not dry_run:
            API_WRITES.labels(kind="ResourceClaimTemplate", verb="create").inc()
        namespace = obj["metadata"]["namespace"]
        body: Any = dict(obj)
        options: dict[str, Any] = {"dry_run": "All"} if dry_run else {}

        def call() -> None:
            try:
                self.resource.create_namespaced_resource_claim_template(
                    namespace, body, field_manager=self.field_manager, **options
                )
            except ApiException as exc:
                if exc.status != 409 or "AlreadyExists" not in str(exc.body):
                    raise

        _retry(call)

    def delete_claim_template(self, namespace: str, name: str, uid: str) -> None:
        """Delete a ResourceClaimTemplate, but only the one with this uid."""
        API_WRITES.labels(kind="ResourceClaimTemplate", verb="delete").inc()
        body: Any = {"preconditions": {"uid": uid}}

        def call() -> None:
            try:
                self.resource.delete_namespaced_resource_claim_template(name, namespace, body=body)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise

        _retry(call)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        API_WRITES.labels(kind="ModelDeployment", verb="patch-status").inc()
        try:
            _retry(
                lambda: self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    {"status": dict(status)},
                    field_manager=self.field_manager,
                    _content_type=MERGE,
                )
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", "ModelDeployment"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "modelplane-operator"},
            "reportingComponent": "modelplane.io/operator",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        API_WRITES.labels(kind="Event", verb="create").inc()
        try:
            _retry(lambda: self.core.create_namespaced_event(meta["namespace"], event))
        except (ApiException, TransientApiError) as exc:
            # An event is best effort: losing one must not fail the reconcile.
            log.warning("could not post event %s for %s: %s", reason, meta["name"], exc)


def _items(resp: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return items


def _retry(call: Callable[[], T], attempts: int = 3) -> T:
    for attempt in range(attempts):
        try:
            API_REQUESTS.inc()
            return call()
        except ApiException as exc:
            if exc.status not in RETRYABLE or refused(exc):
                raise
            if attempt == attempts - 1:
                raise TransientApiError(f"API server answered {exc.status}: {exc.reason}") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # API server restarting
            if attempt == attempts - 1:
                raise TransientApiError(f"API server unreachable: {exc}") from exc
        time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def api_message(exc: ApiException) -> str:
    """The API server's own message for a refused request (its Status body)."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def refused(exc: ApiException) -> bool:
    """The API server refused the request's content: retrying the same body cannot help.

    Server-side apply answers 500, not 422, when it cannot type the body against the
    object's schema (an undeclared field, duplicate keys in a keyed list).
    """
    if exc.status in (400, 422):
        return True
    return exc.status == 500 and "failed to create typed patch object" in (exc.body or "")
