"""The compute limit: the program's forward pass in-process, at several batch sizes.

Usage: python inprocess.py MODEL_DIR DURATION_S BATCH [BATCH ...]  -> JSON on stdout

Back-to-back passes keep the caches hot, which a server answering one client at a time
never has: "paced" also times batch-1 passes spaced like requests at concurrency 1.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

# About the gap between two requests of one closed-loop client (see the echo floor's p50).
PACE_S = 0.0003


def main() -> None:
    model_dir, duration = sys.argv[1], float(sys.argv[2])
    batches = [int(b) for b in sys.argv[3:]]
    module = torch.export.load(f"{model_dir}/model.pt2").module()
    width = next(p for p in module.parameters()).shape[1]
    results = {}
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, width)
            for _ in range(20):
                module(x)
            latencies = []
            end = time.perf_counter() + duration
            while time.perf_counter() < end:
                start = time.perf_counter()
                module(x)
                latencies.append(time.perf_counter() - start)
            total = sum(latencies)
            results[str(batch)] = {
                "rows_per_s": batch * len(latencies) / total,
                "p50_ms": statistics.median(latencies) * 1e3,
            }
        x = torch.randn(1, width)
        paced = []
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            time.sleep(PACE_S)
            start = time.perf_counter()
            module(x)
            paced.append(time.perf_counter() - start)
    report = {
        "threads": torch.get_num_threads(),
        "batches": results,
        "paced_batch1_p50_ms": statistics.median(paced) * 1e3,
        "pace_ms": PACE_S * 1e3,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
