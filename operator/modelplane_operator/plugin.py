"""``kubectl modelplane``: status, rollback, promote, pause, resume and retry.

The plugin only edits the ModelDeployment, exactly as a user would with
``kubectl patch`` or ``kubectl annotate``: the operator does the rest. Install it
by putting ``kubectl-modelplane`` on PATH (``pip install 'modelplane[operator]'``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from kubernetes import client, config

from .phases import SERVED
from .rollout import PROMOTE_ANNOTATION, RETRY_ANNOTATION
from .spec import GROUP, PLURAL, VERSION


def _api(args: argparse.Namespace) -> tuple[client.CustomObjectsApi, str]:
    config.load_kube_config(context=args.context)  # type: ignore[no-untyped-call]
    namespace = args.namespace
    if namespace is None:
        _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        namespace = (active.get("context") or {}).get("namespace") or "default"
    return client.CustomObjectsApi(), namespace


def _get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(obj)


def _patch(api: client.CustomObjectsApi, namespace: str, name: str, body: dict[str, Any]) -> None:
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        body,
        field_manager="kubectl-modelplane",
        _content_type="application/merge-patch+json",
    )


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def status(api: client.CustomObjectsApi, namespace: str, name: str) -> str:
    obj = _get(api, namespace, name)
    st = obj.get("status") or {}
    lines = [
        f"{namespace}/{name}: serving {st.get('currentVersion', '-')} "
        f"(revision {st.get('currentRevision', '-')}), target {st.get('targetVersion', '-')} "
        f"(revision {st.get('targetRevision', '-')}), ready {st.get('ready', '-')}",
        f"endpoint: {st.get('endpoint', '-')}",
        "conditions:",
    ]
    for c in st.get("conditions") or ():
        lines.append(
            f"  {c['type']:<12} {c['status']:<6} {c.get('reason', ''):<26} {c.get('message', '')}"
        )
    lines += _analysis_lines(st) + _autoscaling_lines(st)
    lines.append("history:")
    lines.append(f"  {'REVISION':<9} {'VERSION':<12} {'OUTCOME':<11} {'STARTED':<21} MESSAGE")
    for h in st.get("history") or ():
        lines.append(
            f"  {h.get('revision', ''):<9} {h.get('version', ''):<12} {h.get('outcome', ''):<11} "
            f"{h.get('startedAt', ''):<21} {h.get('message', '')}"
        )
        lines += _digest_lines(h)
    return "\n".join(lines)


def _digest_lines(entry: dict[str, Any]) -> list[str]:
    """The digests a revision serves, under its history line (pinned revisions only)."""
    out = []
    for what in ("uri", "image"):
        value = str(entry.get(what) or "")
        if "@sha256:" in value:
            name, _, digest = value.partition("@")
            out.append(f"  {'':<9} {what + ':':<8} {name} {digest}")
    fetched = entry.get("modelDigests") or (
        [entry["modelDigest"]] if entry.get("modelDigest") else []
    )
    if fetched:
        changed = " (different bytes behind one URI)" if len(fetched) > 1 else ""
        out.append(f"  {'':<9} {'fetched:':<8} {', '.join(map(str, fetched))}{changed}")
    return out


def _analysis_lines(st: dict[str, Any]) -> list[str]:
    """The canary step's analysis: the last interval's figures and verdict."""
    analysis = (st.get("rollout") or {}).get("analysis")
    if not analysis:
        return []
    figures = analysis.get("figures") or {}
    shown = ", ".join(f"{k} {v}" for k, v in figures.items())
    return [
        f"analysis (step {analysis.get('step', 0) + 1}): {analysis.get('intervals', 0)} "
        f"intervals judged, {analysis.get('failedIntervals', 0)} failed",
        f"  last: {analysis.get('verdict', '-')}: {analysis.get('message', '-')}",
        *([f"  figures: {shown}"] if shown else []),
    ]


def _autoscaling_lines(st: dict[str, Any]) -> list[str]:
    scaling = st.get("autoscaling")
    if not scaling:
        return []
    return [
        f"autoscaling: {scaling.get('replicas')} replicas (load asks for "
        f"{scaling.get('desiredReplicas')}), {scaling.get('reason')}: {scaling.get('message')}"
    ]


def previous_revision(obj: dict[str, Any]) -> int | None:
    """The revision that served before the current one, from the history."""
    st = obj.get("status") or {}
    current = st.get("currentRevision")
    for h in st.get("history") or ():
        if h.get("revision") != current and h.get("outcome") in SERVED:
            return int(h["revision"])
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubectl modelplane", description=__doc__)
    p.add_argument("-n", "--namespace")
    p.add_argument("--context")
    sub = p.add_subparsers(dest="command", required=True)
    for command, text in [
        ("status", "conditions, versions and rollout history"),
        ("promote", "advance a paused canary step (annotates modelplane.io/promote)"),
        ("pause", "hold the rollout (spec.rollout.paused: true)"),
        ("resume", "continue the rollout (spec.rollout.paused: false)"),
        ("retry", "try a failed revision again (annotates modelplane.io/retry)"),
        ("rollback", "serve a kept revision (spec.rollout.rollbackTo)"),
        ("undo-rollback", "follow the spec's template again (removes spec.rollout.rollbackTo)"),
    ]:
        cmd = sub.add_parser(command, help=text)
        cmd.add_argument("name")
        if command == "rollback":
            cmd.add_argument("--to-revision", type=int, help="default: the previous revision")
    args = p.parse_args(argv)
    api, namespace = _api(args)
    name = args.name
    try:
        if args.command == "status":
            print(status(api, namespace, name))
        elif args.command in ("promote", "retry"):
            key = PROMOTE_ANNOTATION if args.command == "promote" else RETRY_ANNOTATION
            _patch(api, namespace, name, {"metadata": {"annotations": {key: _stamp()}}})
            print(f"modeldeployment.{GROUP}/{name} {args.command} requested")
        elif args.command in ("pause", "resume"):
            paused = args.command == "pause"
            _patch(api, namespace, name, {"spec": {"rollout": {"paused": paused}}})
            print(f"modeldeployment.{GROUP}/{name} {'paused' if paused else 'resumed'}")
        elif args.command == "rollback":
            revision = args.to_revision or previous_revision(_get(api, namespace, name))
            if revision is None:
                print("no earlier revision to roll back to", file=sys.stderr)
                return 1
            _patch(api, namespace, name, {"spec": {"rollout": {"rollbackTo": revision}}})
            print(f"modeldeployment.{GROUP}/{name} rolling back to revision {revision}")
        elif args.command == "undo-rollback":
            _patch(api, namespace, name, {"spec": {"rollout": {"rollbackTo": None}}})
            print(f"modeldeployment.{GROUP}/{name} follows its spec again")
    except client.ApiException as exc:
        print(f"error: {exc.status} {exc.reason}: {exc.body}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
