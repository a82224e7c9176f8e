"""The words status speaks in: rollout phases and history outcomes.

String enums (kopf's ``class Reason(str, enum.Enum)`` pattern): they are written to and
read from status as plain strings, and compare equal to them, but code names them once.
"""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """status.rollout.phase"""

    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


class Outcome(enum.StrEnum):
    """status.history[].outcome"""

    PROGRESSING = "Progressing"  # the rollout to this revision is under way
    SUCCEEDED = "Succeeded"  # it served every replica
    SUPERSEDED = "Superseded"  # it served, then a newer revision replaced it
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"  # it failed and the last good revision took over again
    INTERRUPTED = "Interrupted"  # replaced before its rollout finished


SERVED = (Outcome.SUCCEEDED, Outcome.SUPERSEDED)  # outcomes of revisions that served
