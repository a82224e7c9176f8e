"""What the planner remembers between reconciles, kept in ``status.rollout``.

An operator restart reads it back and resumes where the rollout was. Times are epoch
seconds here and RFC 3339 text in status.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..phases import Phase

PROGRESSING = Phase.PROGRESSING


def to_time(text: Any) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def to_text(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_precise_text(epoch: float) -> str:
    """With microseconds: a time compared with another one must survive status intact."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AnalysisMemory:
    """The canary analysis of the current step (status.rollout.analysis)."""

    step: int = 0
    intervals: int = 0  # judged at this step
    failed: int = 0
    verdict: str = ""  # Passed, Failed or NoData, of the last judged interval
    message: str = ""  # its figures against the thresholds
    judged_until: float = 0.0  # the end of the last judged interval
    figures: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> AnalysisMemory:
        raw = raw or {}
        return cls(
            step=int(raw.get("step") or 0),
            intervals=int(raw.get("intervals") or 0),
            failed=int(raw.get("failedIntervals") or 0),
            verdict=str(raw.get("verdict") or ""),
            message=str(raw.get("message") or ""),
            judged_until=to_time(raw.get("judgedUntil")) or 0.0,
            figures=dict(raw.get("figures") or {}),
        )

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "intervals": self.intervals,
            "failedIntervals": self.failed,
            "verdict": self.verdict or None,
            "message": self.message or None,
            "judgedUntil": to_precise_text(self.judged_until) if self.judged_until else None,
            "figures": dict(self.figures) or None,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Memory:
    """What the planner remembers between reconciles (status.rollout)."""

    target: int | None = None
    target_hash: str | None = None
    stable: int | None = None
    phase: str = PROGRESSING
    started_at: float | None = None
    last_progress_at: float | None = None
    target_ready: int = 0
    step: int = 0
    step_started_at: float | None = None
    failed: int | None = None
    failed_hash: str | None = None
    failure_reason: str = ""
    failure_message: str = ""
    promote_token: str | None = None
    retry_token: str | None = None
    gpu_limited: bool = False
    analysis: AnalysisMemory | None = None

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Memory:
        raw = raw or {}
        return cls(
            target=raw.get("targetRevision"),
            target_hash=raw.get("targetHash"),
            stable=raw.get("stableRevision"),
            phase=str(raw.get("phase") or PROGRESSING),
            started_at=to_time(raw.get("startedAt")),
            last_progress_at=to_time(raw.get("lastProgressAt")),
            target_ready=int(raw.get("targetReady") or 0),
            step=int(raw.get("step") or 0),
            step_started_at=to_time(raw.get("stepStartedAt")),
            failed=raw.get("failedRevision"),
            failed_hash=raw.get("failedHash"),
            failure_reason=str(raw.get("failureReason") or ""),
            failure_message=str(raw.get("failureMessage") or ""),
            promote_token=raw.get("promoteToken"),
            retry_token=raw.get("retryToken"),
            gpu_limited=bool(raw.get("gpuLimited")),
            analysis=AnalysisMemory.from_status(raw["analysis"]) if raw.get("analysis") else None,
        )

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "targetRevision": self.target,
            "targetHash": self.target_hash,
            "stableRevision": self.stable,
            "phase": self.phase,
            "startedAt": to_text(self.started_at) if self.started_at else None,
            "lastProgressAt": to_text(self.last_progress_at) if self.last_progress_at else None,
            "targetReady": self.target_ready,
            "step": self.step,
            "stepStartedAt": to_text(self.step_started_at) if self.step_started_at else None,
            "failedRevision": self.failed,
            "failedHash": self.failed_hash,
            "failureReason": self.failure_reason or None,
            "failureMessage": self.failure_message or None,
            "promoteToken": self.promote_token,
            "retryToken": self.retry_token,
            "gpuLimited": self.gpu_limited or None,
            "analysis": self.analysis.to_status() if self.analysis else None,
        }
        return {k: v for k, v in out.items() if v is not None}
