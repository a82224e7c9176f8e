"""After a failure: the last good (stable) revision grows back to every replica.

There is no GPU check here: getting the model that worked back comes first.
"""

from __future__ import annotations

from ..phases import Phase
from . import rolling
from .canary import ANALYSIS_FAILED
from .decision import Situation, Step, complete
from .memory import Memory
from .target import RETRY_ANNOTATION


def step(s: Situation, mem: Memory) -> Step:
    stable = mem.stable
    if stable is None or stable not in s.revisions:
        return Step(
            {},
            mem,
            serving=stable,
            phase=Phase.FAILED,
            reason=mem.failure_reason or "RolloutFailed",
            message=f"revision {s.target} failed: {mem.failure_message}",
        )
    stable_rev = s.revisions[stable]
    others = [r for n, r in s.revisions.items() if n != stable]
    replicas = s.budget.replicas
    desired = rolling.roll(stable_rev, stable, replicas, others, s.budget, None, stable)[0]
    done = complete(stable_rev, others, replicas)
    failed_version = s.target_rev.version if s.target_rev else "?"
    message = (
        f"version {failed_version} (revision {s.target}) failed: "
        f"{mem.failure_message}; version {stable_rev.version} (revision {stable}) "
        f"{'serves' if done else 'is being restored'}. Change the spec or annotate "
        f"{RETRY_ANNOTATION} to try again."
    )
    phase = Phase.ROLLED_BACK if done else Phase.ROLLING_BACK
    # A canary its own metrics failed says so (a crash loop or deadline says RolledBack).
    reason = ANALYSIS_FAILED if mem.failure_reason == ANALYSIS_FAILED else phase
    return Step(desired, mem, serving=stable, phase=phase, reason=reason, message=message)
