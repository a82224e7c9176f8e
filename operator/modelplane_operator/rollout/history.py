"""status.history bookkeeping and garbage collection of old revisions.

History is newest first. A rollout opens an entry (outcome Progressing); its end
closes it with an outcome. Revisions beyond ``revisionHistoryLimit`` that hold no pods
are deleted, except the serving and the target ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..phases import SERVED, Outcome
from ..pods import fetched_digest
from ..revisions import Revision
from ..spec import ModelDeploymentSpec
from .memory import to_text

History = list[dict[str, Any]]
# Every kept revision (up to the CRD's maximum revisionHistoryLimit, 50) plus the serving
# and target ones: rollback and "served before" look revisions up in the history.
HISTORY_CAP = 52


def start(
    hist: History,
    target: int,
    revisions: Mapping[int, Revision],
    meta: Mapping[str, str],
    now: float,
    previous_target: int | None,
) -> History:
    """Open an entry for ``target``; an unfinished previous rollout becomes Interrupted."""
    out = []
    for h in hist:
        if h.get("revision") == previous_target and h.get("outcome") == Outcome.PROGRESSING:
            h = {
                **h,
                # Not "Superseded": that one served; this one never finished its rollout.
                "outcome": Outcome.INTERRUPTED,
                "finishedAt": to_text(now),
                "message": f"replaced by revision {target} before it finished",
            }
        out.append(h)
    rev = revisions.get(target)
    entry = {
        "revision": target,
        "version": rev.version if rev else meta.get("version", ""),
        "uri": rev.uri if rev else meta.get("uri", ""),
        "image": rev.image if rev else meta.get("image", ""),
        "startedAt": to_text(now),
        "outcome": Outcome.PROGRESSING,
    }
    if rev is None and meta.get("movedFrom"):
        entry["movedFrom"] = meta["movedFrom"]  # a refreshed tag's digest before it moved
    return [entry, *out]


def finish(hist: History, revision: int, now: float, outcome: Outcome, message: str) -> History:
    """Close the newest entry of ``revision`` with ``outcome``."""
    out = []
    done = False
    for h in hist:
        if not done and h.get("revision") == revision:
            h = {**h, "outcome": outcome, "finishedAt": to_text(now)}
            if message:
                h["message"] = message
            done = True
        out.append(h)
    return out


def served_before(hist: Sequence[Mapping[str, Any]], revision: int) -> bool:
    """Whether ``revision`` once served: going back to it is a rollback, not a canary."""
    return any(h.get("revision") == revision and h.get("outcome") in SERVED for h in hist)


def trim(hist: History, md: ModelDeploymentSpec) -> History:
    return hist[: max(md.revision_history_limit + 2, 1)][:HISTORY_CAP]


def deletable(
    revisions: Mapping[int, Revision],
    replicas: Mapping[int, int],
    keep: set[int | None],
    md: ModelDeploymentSpec,
) -> tuple[int, ...]:
    """Idle revisions beyond the history limit, oldest last; ``keep`` ones never."""
    idle = sorted(
        (
            n
            for n, r in revisions.items()
            if n not in keep and r.replicas == 0 and r.pods == 0 and replicas.get(n, 0) == 0
        ),
        reverse=True,
    )
    return tuple(idle[md.revision_history_limit :])


def record_fetched(
    hist: History, revisions: Mapping[int, Revision]
) -> tuple[History, list[tuple[int, list[str]]]]:
    """Each revision's newest entry records the model digest its pods fetched
    (``modelDigest``). Different bytes behind the same URI (pods of one revision that
    fetched different content, at once or over time) make ``modelDigests``, and are
    returned as (revision, digests) when first seen."""
    out, changed, done = [], [], set()
    for h in hist:
        number = h.get("revision")
        rev = revisions.get(number) if isinstance(number, int) else None
        if rev is None or rev.number in done:
            out.append(h)
            continue
        done.add(rev.number)
        before = set(h.get("modelDigests") or ()) | (
            {h["modelDigest"]} if h.get("modelDigest") else set()
        )
        now = before | {d for d in map(fetched_digest, rev.pod_objects) if d}
        if len(now) == 1 and not before:
            h = {**h, "modelDigest": next(iter(now))}
        elif len(now) > 1 and now != before:
            h = {k: v for k, v in h.items() if k != "modelDigest"} | {"modelDigests": sorted(now)}
            changed.append((rev.number, sorted(now)))
        out.append(h)
    return out, changed
