"""One reconcile of one ModelDeployment: observe, plan, act.

Level-triggered and idempotent: everything is derived from the object and what
the cluster shows now (plus the rollout memory the operator keeps in status), so
running it again changes nothing. Children that are already as wanted are not
written; status is patched only when it changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from .compare import contains
from .config import OperatorConfig
from .gpu import free_slots
from .kube import Kube, api_message, refused
from .manifests import (
    build_deployment,
    build_pod_template,
    build_service,
    selector_string,
)
from .patch import merge_patch
from .pods import Event
from .revisions import Revision, deployment_name, observe_revisions, template_hash
from .rollout import Memory, Plan, plan, to_text
from .spec import ModelDeploymentSpec, SpecError, parse
from .status import compute_status, invalid_spec_status

APPLIED_HASH = "modelplane.io/applied-hash"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    result: str  # "changed", "unchanged" or "invalid"
    status: Mapping[str, Any]  # the status the object holds after this reconcile
    requeue_after: float | None = None


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(r.get("controller") and r.get("uid") == uid for r in refs)


def with_applied_hash(desired: dict[str, Any]) -> dict[str, Any]:
    """Stamp the manifest's hash on it, so a field dropped from it is noticed."""
    digest = hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()[:16]
    desired["metadata"].setdefault("annotations", {})[APPLIED_HASH] = digest
    return desired


def needs_apply(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Apply only when the live object lacks (or changed) something the operator owns."""
    return live is None or not contains(live, desired)


def _gpu_slots(kube: Kube, md: ModelDeploymentSpec) -> Callable[[], int] | None:
    if not md.gpu.count:
        return None

    def slots() -> int:
        try:
            nodes, pods = kube.list_nodes(), kube.list_active_pods()
        except ApiException as exc:
            if exc.status != 403:
                raise
            # Without cluster-wide read access the budget is unknown: surge as asked,
            # and the scheduler's verdict (InsufficientGPU) still reaches status.
            log.warning("cannot read nodes/pods cluster-wide for the GPU budget: %s", exc.reason)
            return 1 << 30
        return free_slots(nodes, pods, md.gpu.count, md.gpu.product, md.pod.node_selector)

    return slots


@dataclass(frozen=True)
class _Observed:
    """The children of one ModelDeployment as the API server shows them."""

    service: Mapping[str, Any] | None
    deployments: Mapping[str, Mapping[str, Any]]
    revisions: Mapping[int, Revision]
    desired_hash: str  # of the pod template the spec asks for
    image: str


def reconcile(
    body: Mapping[str, Any],
    kube: Kube,
    config: OperatorConfig,
    known_status: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> Outcome:
    """Bring the children and status of one ModelDeployment in line.

    ``known_status`` is the status this operator last wrote, when it is newer
    than the one in ``body`` (watch events can lag behind the operator's writes).
    """
    now = time.time() if now is None else now
    meta = body.get("metadata") or {}
    previous = known_status if known_status is not None else (body.get("status") or {})
    try:
        md = parse(body)
    except SpecError as exc:
        generation = int(meta.get("generation") or 0)
        status, events = invalid_spec_status(generation, str(exc), previous, to_text(now))
        changed = _report(kube, body, previous, status, events)
        return Outcome("changed" if changed else "invalid", status)
    seen = _observe(kube, md, config)
    the_plan = plan(
        md,
        seen.desired_hash,
        seen.revisions,
        Memory.from_status(previous.get("rollout")),
        previous.get("history") or [],
        meta.get("annotations") or {},
        _gpu_slots(kube, md),
        now,
        {"version": md.version, "uri": md.uri, "image": seen.image},
    )
    conflicts = _conflicts(kube, md, seen, the_plan)
    try:
        wrote = _act(kube, md, config, seen, the_plan, conflicts)
    except ApiException as exc:
        if not refused(exc):
            raise
        # Admission let through what the API server refuses in a child (an empty
        # nodeSelectorTerms, say): the user must change the spec, so say what to change.
        message = f"the API server refused a child of this ModelDeployment: {api_message(exc)}"
        status, events = invalid_spec_status(md.generation, message, previous, to_text(now))
        _report(kube, body, previous, status, events)
        return Outcome("invalid", status)
    if conflicts:
        # Nothing was written, so nothing started: the rollout's memory (its progress
        # clock above all) and history stay as they were, and no RolloutStarted is told.
        # Once the name is free the rollout starts then, with its whole deadline.
        the_plan = replace(
            the_plan,
            memory=Memory.from_status(previous.get("rollout")),
            history=[dict(h) for h in previous.get("history") or ()],
            events=[],
        )
    status, events = compute_status(
        md, the_plan, seen.revisions, conflicts, config, previous, to_text(now)
    )
    wrote = _report(kube, body, previous, status, events) or wrote
    return Outcome("changed" if wrote else "unchanged", status, the_plan.requeue_after)


def _observe(kube: Kube, md: ModelDeploymentSpec, config: OperatorConfig) -> _Observed:
    selector = selector_string(md)
    deployments = {
        d["metadata"]["name"]: d
        for d in kube.list_deployments(md.namespace, selector)
        if owned_by(d, md.uid)
    }
    pods = kube.list_pods(md.namespace, selector)
    template = build_pod_template(md, config)
    return _Observed(
        service=kube.get_service(md.namespace, md.name),
        deployments=deployments,
        revisions=observe_revisions(deployments.values(), pods),
        desired_hash=template_hash(template),
        image=template["spec"]["containers"][0]["image"],
    )


def _conflicts(kube: Kube, md: ModelDeploymentSpec, seen: _Observed, the_plan: Plan) -> list[str]:
    """Children's names taken by objects this ModelDeployment does not own."""
    conflicts: list[str] = []
    if seen.service is not None and not owned_by(seen.service, md.uid):
        conflicts.append(f"Service {md.namespace}/{md.name}")
    if the_plan.create_target:
        target_name = deployment_name(md.name, the_plan.target)
        existing = kube.get_deployment(md.namespace, target_name)
        if existing is not None and not owned_by(existing, md.uid):
            conflicts.append(f"Deployment {md.namespace}/{target_name}")
    return conflicts


def _act(
    kube: Kube,
    md: ModelDeploymentSpec,
    config: OperatorConfig,
    seen: _Observed,
    the_plan: Plan,
    conflicts: Sequence[str],
) -> bool:
    """Deployments first, so that a template the API server refuses leaves no Service
    behind without a Deployment; then the Service. Whether anything was written."""
    wrote = False
    if not conflicts and the_plan.error is None:
        wrote = _act_on_revisions(
            kube, md, config, the_plan, seen.revisions, seen.deployments, seen.desired_hash
        )
    # A Service only beside a Deployment (a plan error may have made none).
    has_deployment = bool(seen.deployments) or wrote
    desired_service = with_applied_hash(build_service(md))
    if (
        has_deployment
        and not any(c.startswith("Service") for c in conflicts)
        and needs_apply(seen.service, desired_service)
    ):
        kube.apply(desired_service)
        wrote = True
    return wrote


def _act_on_revisions(
    kube: Kube,
    md: ModelDeploymentSpec,
    config: OperatorConfig,
    the_plan: Plan,
    revisions: Mapping[int, Revision],
    deployments: Mapping[str, Mapping[str, Any]],
    desired_hash: str,
) -> bool:
    wrote = False
    applies: dict[int, dict[str, Any]] = {}
    scales: dict[int, int] = {}
    for number, replicas in the_plan.replicas.items():
        rev = revisions.get(number)
        if rev is None or rev.hash == desired_hash:
            # The spec's own template: apply it whole, which also reverts drift.
            desired = with_applied_hash(
                build_deployment(md, config, number, desired_hash, replicas)
            )
            if needs_apply(deployments.get(deployment_name(md.name, number)), desired):
                applies[number] = desired
        elif rev.replicas != replicas:
            scales[number] = replicas  # an older template: only its size changes
    if applies and scales:
        # Admission cannot check everything in a pod template, so the API server may
        # still refuse the spec's own one: ask first, before any serving revision shrinks.
        for desired in applies.values():
            kube.apply(desired, dry_run=True)
    for number in sorted(applies.keys() | scales.keys()):
        dep_name = deployment_name(md.name, number)
        if number in applies:
            kube.apply(applies[number])
            replicas = the_plan.replicas[number]
            log.info("applied Deployment %s/%s (%d replicas)", md.namespace, dep_name, replicas)
        else:
            kube.scale_deployment(md.namespace, dep_name, scales[number])
            log.info("scaled Deployment %s/%s to %d", md.namespace, dep_name, scales[number])
        wrote = True
    for number in the_plan.delete:
        dep_name = deployment_name(md.name, number)
        live = deployments.get(dep_name)
        if live is not None:
            kube.delete_deployment(md.namespace, dep_name, live["metadata"]["uid"])
            log.info("deleted old revision %s/%s", md.namespace, dep_name)
            wrote = True
    return wrote


def _report(
    kube: Kube,
    body: Mapping[str, Any],
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    events: list[Event],
) -> bool:
    meta = body["metadata"]
    wrote = False
    patch = merge_patch(previous, status)
    if patch:
        kube.patch_status(meta["namespace"], meta["name"], patch)
        wrote = True
    for event in events:
        kube.post_event(body, event.type, event.reason, event.message)
        wrote = True
    return wrote
