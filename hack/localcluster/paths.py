"""Where the local cluster keeps its binaries and state (all outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("MODELPLANE_CACHE", Path.home() / ".cache" / "modelplane"))
BIN_DIR = CACHE_DIR / "bin"
CLUSTERS_DIR = CACHE_DIR / "clusters"
