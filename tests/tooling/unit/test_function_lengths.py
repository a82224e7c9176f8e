"""The function-length check that `make lint` runs finds long functions, and only them."""

from __future__ import annotations

from pathlib import Path

import pytest

import function_lengths

REPO = Path(__file__).resolve().parents[3]


def _module(tmp_path: Path, body_lines: int) -> Path:
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    path = tmp_path / "mod.py"
    path.write_text(f"def short():\n    return 1\n\n\nasync def long():\n{body}")
    return path


def test_a_function_over_the_limit_is_found_with_its_line_and_length(tmp_path: Path) -> None:
    found = list(function_lengths.long_functions(_module(tmp_path, 80)))
    assert found == [("long", 5, 81)]


def test_a_function_at_the_limit_passes(tmp_path: Path) -> None:
    assert list(function_lengths.long_functions(_module(tmp_path, 79))) == []


def test_the_repository_has_no_function_over_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    assert function_lengths.main(list(function_lengths.ROOTS)) == 0
