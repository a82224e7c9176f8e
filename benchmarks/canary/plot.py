"""Draw a real aborted canary: its traffic share and the error rate, second by second.

`make canary-plot` runs tests/operator/node/test_node_analysis.py's abort test on the
real node with MODELPLANE_CANARY_TIMELINE set, then this script reads the JSON it wrote
(docs/benchmarks/canary-abort.json: the load's outcomes per second, the rules, the
abort message and the commit) and draws docs/canary-abort.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "docs" / "benchmarks" / "canary-abort.json"
PLOT = REPO / "docs" / "canary-abort.png"


def main() -> int:
    data = json.loads(DATA.read_text())
    rows = data["timeline"]
    seconds = [r["second"] for r in rows]
    share = [100 * r["canary"] / r["requests"] for r in rows]
    errors = [100 * r["errors"] / r["requests"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(seconds, share, label="requests reaching the canary (%)", color="tab:blue")
    ax.plot(seconds, errors, label="failed requests, all traffic (%)", color="tab:red")
    abort = data["changed_at_s"] + data["aborted_after_s"]
    ax.axvline(data["changed_at_s"], color="grey", linestyle=":", label="canary applied")
    ax.axvline(
        abort, color="black", linestyle="--", label="status reads RolledBack (stable restored)"
    )
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("% of requests per second")
    ax.set_ylim(0, 100)
    rules = data["rules"]
    ax.set_title(
        f"Canary aborted on its own metrics (interval {rules['interval']}, "
        f"success >= {rules['minSuccessRate']}%, {rules['failureLimit']} failed intervals)\n"
        f"{data['message']}  [commit {data['commit']}]",
        fontsize=8,
    )
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT.relative_to(REPO)} from {DATA.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
