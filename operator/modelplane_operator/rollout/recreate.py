"""Recreate: every old pod goes first, then the new revision scales up.

For models that cannot run two versions side by side (one GPU, a schema change).
"""

from __future__ import annotations

from .decision import Situation, Step
from .memory import Memory


def step(s: Situation, mem: Memory) -> Step:
    olds = s.olds
    old_pods = sum(o.pods for o in olds)
    desired = {o.number: 0 for o in olds}
    desired[s.target] = s.budget.replicas if old_pods == 0 else 0
    return Step(desired, mem, serving=mem.stable)
