"""Where a report's figures come from: the commit they were measured at.

Every benchmark and the reliability report print and record this, so a figure read later
can be traced to the code that produced it (a report produced from uncommitted changes
says so with "-dirty").
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit(repo: Path = REPO) -> str:
    """The checked-out commit (12 hex digits), "-dirty" when tracked files differ from it."""
    head = _git(repo, "rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown"
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if dirty else "")


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
