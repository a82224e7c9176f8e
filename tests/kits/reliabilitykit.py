"""Figures the reliability suites report, and the docs/reliability.md they produce.

Tests marked ``@pytest.mark.reliability("Suite")`` take the ``reliability`` fixture and
record what they tried (iterations survived, inputs generated, refusals, ...). Tests marked
``@pytest.mark.found("what broke")`` are regression tests for failures these suites found.
When ``MODELPLANE_RELIABILITY_REPORT`` names a file, the session writes the report there at
its end (``make reliability`` does, in soak mode); a plain ``make test`` writes nothing.
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field

from provenance import commit

REPORT_ENV = "MODELPLANE_RELIABILITY_REPORT"
SOAK_ENV = "MODELPLANE_SOAK"


def soak_mode() -> bool:
    return os.environ.get(SOAK_ENV, "") not in ("", "0", "false")


def iterations(ci: int, soak: int) -> int:
    """How many times a fault is injected: a few in CI, many in soak mode."""
    return soak if soak_mode() else ci


@dataclass
class TestRecord:
    suite: str
    title: str
    outcome: str = "not run"
    seconds: float = 0.0
    figures: dict[str, object] = field(default_factory=dict)


@dataclass
class Finding:
    what: str
    test: str
    outcome: str = "not run"


class Report:
    """Collected over one pytest session."""

    def __init__(self) -> None:
        self.tests: dict[str, TestRecord] = {}
        self.findings: dict[str, Finding] = {}

    def recorder(self, nodeid: str, suite: str, title: str) -> Recorder:
        record = self.tests.setdefault(nodeid, TestRecord(suite, title))
        return Recorder(record)

    def render(self) -> str:
        lines = [
            "# Reliability report",
            "",
            "Produced by the reliability suites (`make reliability`: every test marked "
            "`reliability` or `found`, in soak mode); do not edit by hand.",
            "",
            f"- run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit "
            f"`{commit()}`, {platform.machine()}, {os.cpu_count()} CPUs",
            f"- soak mode: {'on' if soak_mode() else 'off (CI counts)'}",
            "",
        ]
        suites: dict[str, list[TestRecord]] = {}
        for record in self.tests.values():
            suites.setdefault(record.suite, []).append(record)
        for suite, records in suites.items():
            lines += [
                f"## {suite}",
                "",
                "| test | outcome | seconds | figures |",
                "| --- | --- | --- | --- |",
            ]
            for r in records:
                figures = "; ".join(f"{k}: {_fmt(v)}" for k, v in r.figures.items())
                lines.append(f"| {r.title} | {r.outcome} | {r.seconds:.0f} | {figures} |")
            lines.append("")
        lines += [
            "## Failures found and fixed",
            "",
            "Each row is a failure these suites found; its regression test now passes.",
            "",
            "| failure | regression test | outcome |",
            "| --- | --- | --- |",
        ]
        for finding in self.findings.values():
            lines.append(f"| {finding.what} | `{finding.test}` | {finding.outcome} |")
        return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class Recorder:
    """What one test hands to the report."""

    def __init__(self, record: TestRecord) -> None:
        self._record = record

    def record(self, name: str, value: object) -> None:
        self._record.figures[name] = value

    def add(self, name: str, amount: int = 1) -> None:
        current = self._record.figures.get(name, 0)
        assert isinstance(current, int)
        self._record.figures[name] = current + amount
