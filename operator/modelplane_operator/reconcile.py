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

from . import servers
from .allocation import GpuAllocation, claim_allocation, extended_allocation
from .autoscale import Decision, ScaleReason, decide, within
from .compare import contains
from .config import OperatorConfig
from .devices import free_claim_slots, mapped_slots
from .gpu import free_slots
from .kube import Kube, api_message, refused
from .manifests import (
    GPU_PRODUCT_LABEL,
    build_claim_template,
    build_deployment,
    build_pod_template,
    build_service,
    claim_template_name,
    revision_identity,
    selector_string,
)
from .metering import CanaryReading, Meters
from .patch import merge_patch
from .pinning import (
    STALLING,
    Choice,
    PinError,
    PinReason,
    SecretReader,
    choose_pins,
    resolve_pins,
)
from .pods import Event
from .revisions import Revision, deployment_name, observe_revisions, template_hash
from .rollout import Memory, Plan, plan, to_text
from .rollout.history import record_fetched
from .spec import API_VERSION, KIND, GpuClaim, ModelDeploymentSpec, SpecError, parse
from .status import compute_status, invalid_spec_status, unservable_status

APPLIED_HASH = "modelplane.io/applied-hash"
# How often an autoscaled ModelDeployment's load is read, at most.
AUTOSCALE_PERIOD_S = 5.0
# A tag not pushed yet, a secret being fixed: asked again at this pace (no hot loop).
PIN_RETRY_S = 30.0
log = logging.getLogger(__name__)
# What is measured between reconciles (canary intervals, load), for callers that keep none.
METERS = Meters()


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
    if not md.uses_gpu:
        return None

    def slots() -> int:
        try:
            return _free_gpu_slots(kube, md)
        except ApiException as exc:
            if exc.status != 403:
                raise
            # Without cluster-wide read access the budget is unknown: surge as asked,
            # and the scheduler's verdict (InsufficientGPU) still reaches status.
            log.warning("cannot read the cluster's GPUs for the GPU budget: %s", exc.reason)
            return 1 << 30

    return slots


def _free_gpu_slots(kube: Kube, md: ModelDeploymentSpec) -> int:
    """How many more replicas the free GPUs of the ModelDeployment's mode can take."""
    nodes = kube.list_nodes()
    if md.gpu_claim is not None:
        return free_claim_slots(
            nodes,
            kube.list_resource_slices(),
            kube.list_device_classes(),
            kube.list_all_resource_claims(),
            md.gpu_claim,
            md.pod.node_selector,
        )
    pods = kube.list_active_pods()
    extended = free_slots(
        nodes, pods, md.gpu.count, md.gpu.product, md.pod.node_selector, md.gpu.resource
    )
    return extended + _mapped_gpu_slots(kube, md, nodes)


def _mapped_gpu_slots(
    kube: Kube, md: ModelDeploymentSpec, nodes: Sequence[Mapping[str, Any]]
) -> int:
    """Extended resources that a DeviceClass maps to DRA devices are served from those
    devices too, on nodes without a device plugin. Unknown (no DRA API, or no right to
    read it): none, so the budget counts only what it knows."""
    selector = dict(md.pod.node_selector)
    if md.gpu.product:
        selector[GPU_PRODUCT_LABEL] = md.gpu.product
    try:
        classes = kube.list_device_classes()
        if not any((c.get("spec") or {}).get("extendedResourceName") for c in classes):
            return 0
        slices, claims = kube.list_resource_slices(), kube.list_all_resource_claims()
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise
        return 0
    return mapped_slots(nodes, slices, classes, claims, md.gpu.resource, md.gpu.count, selector)


def _gpu_allocation(
    kube: Kube, md: ModelDeploymentSpec, revisions: Mapping[int, Revision]
) -> GpuAllocation | None:
    """What the pods hold: read from their claims in device-claim mode."""
    if not md.uses_gpu:
        return None
    pods = [p for r in revisions.values() for p in r.pod_objects]
    if md.gpu_claim is None:
        return extended_allocation(md, pods)
    try:
        claims, slices = kube.list_resource_claims(md.namespace), kube.list_resource_slices()
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.warning("cannot read ResourceClaims/ResourceSlices for status: %s", exc.reason)
        return None
    return claim_allocation(md.gpu_claim.device_class, pods, claims, slices)


@dataclass(frozen=True)
class _Observed:
    """The children of one ModelDeployment as the API server shows them."""

    service: Mapping[str, Any] | None
    deployments: Mapping[str, Mapping[str, Any]]
    revisions: Mapping[int, Revision]
    desired_hash: str  # of the pod template the spec asks for
    image: str
    claim_templates: Mapping[str, Mapping[str, Any]]  # by name (device-claim mode)


def reconcile(
    body: Mapping[str, Any],
    kube: Kube,
    config: OperatorConfig,
    known_status: Mapping[str, Any] | None = None,
    now: float | None = None,
    meters: Meters | None = None,
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
    meters = meters or METERS
    seen = _observe(kube, md, config)
    try:
        choice = _pins(kube, md, config, seen, meters, now)
    except PinError as exc:
        return _unpinned(kube, body, md, previous, exc, now)
    spec_hash = seen.desired_hash
    seen = replace(seen, desired_hash=choice.revision_hash)
    memory = Memory.from_status(previous.get("rollout"))
    gpu_slots = _gpu_slots(kube, md)
    scaled: Decision | None = None
    if md.autoscaling is not None:
        scaled = _autoscale(md, seen, previous, meters, gpu_slots, now)
        md = replace(md, replicas=scaled.replicas)
    the_plan = plan(
        md,
        seen.desired_hash,
        seen.revisions,
        memory,
        previous.get("history") or [],
        meta.get("annotations") or {},
        gpu_slots,
        now,
        _described(md, seen, choice),
        _canary_reading(md, seen, memory, meters, now),
    )
    conflicts = _conflicts(kube, md, seen, the_plan)
    try:
        wrote = _act(kube, md, config, seen, the_plan, conflicts, choice, spec_hash)
    except ApiException as exc:
        if not refused(exc):
            raise
        return _refused_child(kube, body, md, previous, exc, now)
    if conflicts:
        the_plan = _not_started(the_plan, previous)
    status, events = compute_status(
        md,
        the_plan,
        seen.revisions,
        conflicts,
        config,
        previous,
        to_text(now),
        _gpu_allocation(kube, md, seen.revisions),
    )
    events += _pin_events(choice, the_plan, seen.revisions) + _record_fetched(status, seen)
    requeue = _sooner(the_plan.requeue_after, md.refresh_s)
    if scaled is not None:
        status["autoscaling"] = _autoscaling_status(scaled, previous, now)
        events += _scale_events(scaled, previous)
        requeue = _sooner(requeue, AUTOSCALE_PERIOD_S)
    wrote = _report(kube, body, previous, status, events) or wrote
    return Outcome("changed" if wrote else "unchanged", status, requeue)


def _not_started(the_plan: Plan, previous: Mapping[str, Any]) -> Plan:
    """Nothing was written, so nothing started: the rollout's memory (its progress clock
    above all) and history stay as they were, and no RolloutStarted is told. Once the
    name is free the rollout starts then, with its whole deadline."""
    return replace(
        the_plan,
        memory=Memory.from_status(previous.get("rollout")),
        history=[dict(h) for h in previous.get("history") or ()],
        events=[],
    )


def _canary_reading(
    md: ModelDeploymentSpec, seen: _Observed, memory: Memory, meters: Meters, now: float
) -> CanaryReading | None:
    """Measure the canary, when a step of an analysed Canary rollout is under way."""
    rules = md.rollout.analysis
    target, stable = memory.target, memory.stable
    canary = seen.revisions.get(target) if target is not None else None
    if (
        rules is None
        or md.rollout.strategy != "Canary"
        or canary is None
        or stable is None
        or stable == target
        or memory.failed == target
        or memory.step >= len(md.rollout.canary_steps)
    ):
        meters.stop_canary(md.uid)
        return None
    key = (canary.number, stable, memory.step)
    stable_rev = seen.revisions.get(stable)
    endpoint = servers.metrics_endpoint(md)
    return meters.canary(md.uid, key, canary, stable_rev, endpoint, rules.interval_s, now)


def _autoscale(
    md: ModelDeploymentSpec,
    seen: _Observed,
    previous: Mapping[str, Any],
    meters: Meters,
    gpu_slots: Callable[[], int] | None,
    now: float,
) -> Decision:
    """The replica count the load asks for and the free GPUs allow (spec.autoscaling)."""
    rules = md.autoscaling
    assert rules is not None
    current = within(int((previous.get("autoscaling") or {}).get("replicas") or md.replicas), rules)
    endpoint = servers.metrics_endpoint(md)
    reading = meters.load(md.uid, seen.revisions.values(), endpoint, rules, now)
    if not reading.measured or reading.failed:
        why = "; ".join(f"{p}: {e}" for p, e in sorted(reading.failed.items())) or "no ready pod"
        unknown = Decision(current, current, ScaleReason.NO_METRICS, f"load unknown ({why})")
        return replace(unknown, measured=reading.measured)
    free = gpu_slots() if gpu_slots is not None else None
    decided = decide(current, reading.history, now, rules, free, reading.in_flight)
    return replace(decided, in_flight=reading.in_flight, measured=reading.measured)


def _autoscaling_status(
    scaled: Decision, previous: Mapping[str, Any], now: float
) -> dict[str, Any]:
    before = previous.get("autoscaling") or {}
    changed = before.get("replicas") != scaled.replicas
    return {
        "replicas": scaled.replicas,
        "desiredReplicas": scaled.desired,
        "inFlight": round(scaled.in_flight, 1),
        "measuredPods": scaled.measured,
        "reason": scaled.reason.value,
        "message": scaled.message,
        "lastScaleTime": to_text(now) if changed else before.get("lastScaleTime", to_text(now)),
    }


def _scale_events(scaled: Decision, previous: Mapping[str, Any]) -> list[Event]:
    before = previous.get("autoscaling") or {}
    events = []
    if before and before.get("replicas") != scaled.replicas:
        events.append(Event("Normal", "Scaled", scaled.message))
    if scaled.reason is ScaleReason.GPU_LIMITED and before.get("reason") != scaled.reason.value:
        events.append(Event("Warning", ScaleReason.GPU_LIMITED.value, scaled.message))
    return events


def _observe(kube: Kube, md: ModelDeploymentSpec, config: OperatorConfig) -> _Observed:
    selector = selector_string(md)
    deployments = {
        d["metadata"]["name"]: d
        for d in kube.list_deployments(md.namespace, selector)
        if owned_by(d, md.uid)
    }
    pods = kube.list_pods(md.namespace, selector)
    template = build_pod_template(md, config)
    templates: dict[str, Mapping[str, Any]] = {}
    if md.gpu_claim is not None:
        templates = {
            t["metadata"]["name"]: t for t in kube.list_claim_templates(md.namespace, selector)
        }
    return _Observed(
        service=kube.get_service(md.namespace, md.name),
        deployments=deployments,
        revisions=observe_revisions(deployments.values(), pods),
        desired_hash=template_hash(revision_identity(md, template)),
        image=template["spec"]["containers"][0]["image"],
        claim_templates=templates,
    )


def _pins(
    kube: Kube,
    md: ModelDeploymentSpec,
    config: OperatorConfig,
    seen: _Observed,
    meters: Meters,
    now: float,
) -> Choice:
    """The digests of the spec's revision: recorded on it when it exists (nothing is
    asked: a restart or a rollback serves what it served), else asked of the registries;
    with spec.model.refreshInterval, asked again once per interval."""
    due = md.refresh_s is not None and meters.refresh_due(md.uid, md.refresh_s, now)
    return choose_pins(
        seen.desired_hash,
        seen.revisions.values(),
        due,
        lambda: resolve_pins(md, seen.image, config, _secret_reader(kube)),
    )


def _described(md: ModelDeploymentSpec, seen: _Observed, choice: Choice) -> dict[str, str]:
    """What history says of a new target revision: the digests it serves."""
    return {
        "version": md.version,
        "uri": choice.pins.model or md.uri,
        "image": choice.pins.image or seen.image,
        "movedFrom": choice.moved_from,
    }


def _sooner(requeue: float | None, period: float | None) -> float | None:
    if period is None:
        return requeue
    return min(requeue or period, period)


def _record_fetched(status: dict[str, Any], seen: _Observed) -> list[Event]:
    """The digests the pods fetched, into history; a warning when one URI gave two."""
    status["history"], changed = record_fetched(status.get("history") or [], seen.revisions)
    return [
        Event(
            "Warning",
            "ModelChanged",
            f"pods of revision {number} fetched different bytes from the same URI: "
            + ", ".join(digests)
            + " (pin it: sha256 or an oci:// digest)",
        )
        for number, digests in changed
    ]


def _pin_events(choice: Choice, the_plan: Plan, revisions: Mapping[int, Revision]) -> list[Event]:
    events = [Event("Warning", "ImageNotPinned", w) for w in choice.warnings]
    if choice.moved_from and the_plan.create_target:
        events.append(
            Event(
                "Normal",
                "TagMoved",
                f"{choice.moved_from.split('@')[0]} moved from {choice.moved_from.split('@')[-1]} "
                f"to {choice.pins.model.split('@')[-1]}: rolling out revision {the_plan.target}",
            )
        )
    return events


def _refused_child(
    kube: Kube,
    body: Mapping[str, Any],
    md: ModelDeploymentSpec,
    previous: Mapping[str, Any],
    exc: ApiException,
    now: float,
) -> Outcome:
    """Admission let through what the API server refuses in a child (an empty
    nodeSelectorTerms, say): the user must change the spec, so say what to change."""
    message = f"the API server refused a child of this ModelDeployment: {api_message(exc)}"
    status, events = invalid_spec_status(md.generation, message, previous, to_text(now))
    _report(kube, body, previous, status, events)
    return Outcome("invalid", status)


def _unpinned(
    kube: Kube,
    body: Mapping[str, Any],
    md: ModelDeploymentSpec,
    previous: Mapping[str, Any],
    exc: PinError,
    now: float,
) -> Outcome:
    """Nothing is made for a tag the registry does not know or lets no one read: the
    serving revisions stay as they are, status says why, and it is asked again."""
    status, events = unservable_status(
        md.generation, exc.reason, str(exc), exc.reason in STALLING, previous, to_text(now)
    )
    changed = _report(kube, body, previous, status, events)
    return Outcome("changed" if changed else "unservable", status, PIN_RETRY_S)


def _secret_reader(kube: Kube) -> SecretReader:
    def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            return kube.get_secret(namespace, name)
        except ApiException as exc:
            if exc.status != 403:
                raise
            raise PinError(
                PinReason.AUTH_FAILED,
                f"the operator may not read Secret {namespace}/{name} for the registry's "
                "credentials: grant it get on secrets (chart value rbac.registrySecrets)",
            ) from None

    return read


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
    choice: Choice,
    spec_hash: str,
) -> bool:
    """Deployments first, so that a template the API server refuses leaves no Service
    behind without a Deployment; then the Service. Whether anything was written."""
    wrote = False
    if not conflicts and the_plan.error is None:
        if md.gpu_claim is not None:
            _ask_for_claim_template(kube, md, md.gpu_claim, the_plan, seen)
        applied = _act_on_revisions(
            kube, md, config, the_plan, seen, choice.pins.as_dict(), spec_hash
        )
        wrote = bool(applied)
        if md.gpu_claim is not None:
            wrote = (
                _ensure_claim_templates(kube, md, md.gpu_claim, the_plan, seen, applied) or wrote
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
    seen: _Observed,
    pins: Mapping[str, str],
    spec_hash: str,
) -> dict[int, Mapping[str, Any]]:
    """Apply, scale and delete the revisions' Deployments as planned; the Deployments
    written (by revision; a scaled or deleted one maps to {})."""
    revisions, deployments, desired_hash = seen.revisions, seen.deployments, seen.desired_hash
    written: dict[int, Mapping[str, Any]] = {}
    applies: dict[int, dict[str, Any]] = {}
    scales: dict[int, int] = {}
    for number, replicas in the_plan.replicas.items():
        rev = revisions.get(number)
        if rev is None or rev.hash == desired_hash:
            # The spec's own template: apply it whole, which also reverts drift.
            desired = with_applied_hash(
                build_deployment(md, config, number, desired_hash, replicas, pins, spec_hash)
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
            written[number] = kube.apply(applies[number])
            replicas = the_plan.replicas[number]
            log.info("applied Deployment %s/%s (%d replicas)", md.namespace, dep_name, replicas)
        else:
            kube.scale_deployment(md.namespace, dep_name, scales[number])
            log.info("scaled Deployment %s/%s to %d", md.namespace, dep_name, scales[number])
            written[number] = {}
    for number in the_plan.delete:
        dep_name = deployment_name(md.name, number)
        live = deployments.get(dep_name)
        if live is not None:
            kube.delete_deployment(md.namespace, dep_name, live["metadata"]["uid"])
            log.info("deleted old revision %s/%s", md.namespace, dep_name)
            written[number] = {}
    return written


def _ask_for_claim_template(
    kube: Kube, md: ModelDeploymentSpec, claim: GpuClaim, the_plan: Plan, seen: _Observed
) -> None:
    """Before a Deployment whose pods need a new ResourceClaimTemplate is written, ask the
    API server (dry run) whether it takes the template: a refused one (a CEL selector that
    does not compile) then leaves nothing half made, and status says why."""
    if claim_template_name(md.name, the_plan.target) in seen.claim_templates:
        return
    # Owned by the ModelDeployment for the question only: the real owner, the revision's
    # Deployment, does not exist yet.
    stand_in = {"metadata": {"name": md.name, "uid": md.uid}}
    template = build_claim_template(md, claim, the_plan.target, stand_in)
    template["metadata"]["ownerReferences"][0].update(apiVersion=API_VERSION, kind=KIND)
    kube.create_claim_template(template, dry_run=True)


def _ensure_claim_templates(
    kube: Kube,
    md: ModelDeploymentSpec,
    claim: GpuClaim,
    the_plan: Plan,
    seen: _Observed,
    applied: Mapping[int, Mapping[str, Any]],
) -> bool:
    """Each revision of the spec's own template gets its ResourceClaimTemplate, owned
    by its Deployment; one that is missing or differs is made again. Whether any was."""
    wrote = False
    for number in the_plan.replicas:
        rev = seen.revisions.get(number)
        if rev is not None and rev.hash != seen.desired_hash:
            continue  # an older template: its claim template was made with it
        deployment = applied.get(number) or seen.deployments.get(deployment_name(md.name, number))
        if not deployment or not (deployment.get("metadata") or {}).get("uid"):
            continue
        desired = build_claim_template(md, claim, number, deployment)
        live = seen.claim_templates.get(claim_template_name(md.name, number))
        if live is not None and contains(live, desired):
            continue
        if live is not None:
            # The spec of a ResourceClaimTemplate cannot change: replace it.
            meta = live["metadata"]
            kube.delete_claim_template(md.namespace, meta["name"], meta["uid"])
        kube.create_claim_template(desired)
        log.info("created ResourceClaimTemplate %s/%s", md.namespace, desired["metadata"]["name"])
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
