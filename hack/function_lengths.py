"""Refuse functions longer than a reader can hold at once (``make lint``).

A function past ``LIMIT`` lines usually makes several decisions that deserve names of
their own (rollout.plan was 328 lines before it became a package). Counted from the
``def`` line to the last line of the body, docstring and comments included.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

LIMIT = 80
ROOTS = ("operator", "runtime", "hack")


def long_functions(path: Path, limit: int = LIMIT) -> Iterator[tuple[str, int, int]]:
    """(name, first line, length) of each function in ``path`` longer than ``limit``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                yield node.name, node.lineno, length


def main(roots: list[str]) -> int:
    long = {
        f"{path}:{name}": (line, length)
        for root in roots
        for path in sorted(Path(root).rglob("*.py"))
        for name, line, length in long_functions(path)
    }
    found = [
        f"{key.split(':')[0]}:{line}: {key.split(':')[1]} is {length} lines (at most {LIMIT}): "
        "split it into functions named for what they decide"
        for key, (line, length) in long.items()
    ]
    print(
        "\n".join(found) or f"no function over {LIMIT} lines",
        file=sys.stderr if found else sys.stdout,
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(ROOTS)))
