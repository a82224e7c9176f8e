"""Runtime benchmark: modelplane vs the HTTP floor, the compute limit, KServe and TorchServe.

Run in the benchmark environment (`pip install -e '.[runtime,test,bench]'`; Java 11+ for
TorchServe):

    ~/.cache/modelplane/bench-venv/bin/python benchmarks/runtime/bench.py

Two models built locally (tiny 16->64->4 and compute-bound 512->2048->2048->512), each
served in turn by: a bare echo ASGI app on uvicorn (the HTTP floor), the modelplane runtime
with and without dynamic batching, KServe's ModelServer (one worker) and TorchServe 0.12
(one worker, with and without its batching). A closed-loop load generator (tritonclient,
binary tensors; TorchServe through its JSON API) runs at concurrency 1, 4, 16, 32. Servers
are pinned to CPU 0 and the load generator to CPU 1, so each side has one core; the
in-process forward pass (the compute limit) is measured pinned to CPU 0 as well.

All servers of a model stay up together, and the measurement runs in rounds: each round
measures the in-process forward pass and then every point, server after server (starting
with a different server each round). A slow spell of the machine then hits one round of
every server alike instead of all rounds of one server. Each point reports the median over
rounds; each target ratio is computed within each round and reported as the median with
the lowest and highest round. Results go to docs/benchmarks/runtime.json and runtime.png;
the target ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "runtime"), str(REPO / "hack")]

from modelplane_runtime.model import LoadedModel  # noqa: E402
from modelplane_runtime.package import load_factory, package_model  # noqa: E402
from modelplane_runtime.protocol import InferRequest, encode_response  # noqa: E402
from provenance import commit  # noqa: E402

CONCURRENCY = (1, 4, 16, 32)
INPROCESS_BATCHES = (1, 4, 8, 16, 32)
MODELS = {"tiny": ("tiny_mlp", 16, 4), "compute": ("compute_mlp", 512, 512)}
SERVER_CPUS = {0}
CLIENT_CPUS = {1}
MAX_BATCH = 32
QUEUE_DELAY_MS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpus: set[int]) -> Callable[[], None]:
    def apply() -> None:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, cpus)

    return apply


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat): user, nice, system, idle, ..., steal."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor gave to others (steal) between two readings:
    above a few percent, the run's ratios are not to be trusted."""
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:8])
    return delta[7] / total if total and len(delta) > 7 else 0.0


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ... utime (12th), stime (13th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process group on the server CPU; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(SERVER_CPUS),
            start_new_session=True,
        )

    def wait(self, check: Callable[[], bool], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(
            f"not ready in {timeout}s: {self.log.read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def build_model(name: str, work: Path) -> Path:
    factory, width, _ = MODELS[name]
    out = work / name
    module = load_factory(f"{REPO / 'examples/models/mlp.py'}:{factory}")()
    package_model(module, {"x": torch.randn(2, width)}, out, name=name, max_batch_size=64)
    return out


def canned_response(model_dir: Path, name: str, width: int) -> tuple[bytes, int]:
    model = LoadedModel.load(model_dir / "metadata.json")
    x = {"x": np.zeros((1, width), np.float32)}
    request = InferRequest(None, x, {"output0": True}, True)
    encoded = encode_response(name, "1", request, model.predict(x), {"output0": "FP32"})
    assert encoded.json_length is not None
    return encoded.body, encoded.json_length


def measure(
    kind: str,
    port: int,
    name: str,
    width: int,
    out_width: int,
    pgid: int,
    concurrency: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """One point: the load generator at one concurrency against one running server."""
    spec = {
        "kind": kind,
        "url": f"127.0.0.1:{port}",
        "model": name,
        "width": width,
        "out_width": out_width,
        "concurrency": concurrency,
        "duration": duration,
        "warmup": warmup,
    }
    cpu_before = group_cpu_s(pgid)
    done = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        preexec_fn=pinned(CLIENT_CPUS),
        timeout=duration + warmup + 120,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-500:]}
    row: dict[str, Any] = json.loads(done.stdout)
    row["rows_per_s"] = row["rps"]
    # Over warm-up and measurement alike: what one answered request costs the server.
    answered = row["rps"] * (duration + warmup)
    row["server_cpu_us_per_request"] = (
        (group_cpu_s(pgid) - cpu_before) * 1e6 / answered if answered else None
    )
    return row


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric field over the rounds that ran, and the rounds."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"error": rounds[-1].get("error", "no round ran"), "rounds": rounds}
    summary: dict[str, Any] = {}
    for key, value in good[0].items():
        values = [r[key] for r in good if isinstance(r.get(key), int | float)]
        if isinstance(value, int | float) and values:
            summary[key] = statistics.median(values)
    summary["requests"] = sum(r["requests"] for r in good)
    summary["errors"] = sum(r["errors"] for r in good)
    summary["first_error"] = next((r["first_error"] for r in good if r["first_error"]), None)
    summary["rounds"] = rounds
    return summary


def summarize_inprocess(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    batches = {
        size: {
            key: statistics.median(r["batches"][size][key] for r in rounds)
            for key in ("rows_per_s", "p50_ms")
        }
        for size in rounds[0]["batches"]
    }
    return {
        "threads": rounds[0]["threads"],
        "batches": batches,
        "paced_batch1_p50_ms": statistics.median(r["paced_batch1_p50_ms"] for r in rounds),
        "pace_ms": rounds[0]["pace_ms"],
        "rounds": rounds,
    }


def oip_ready(port: int, name: str) -> Callable[[], bool]:
    return lambda: httpx.get(f"http://127.0.0.1:{port}/v2/models/{name}/ready").status_code == 200


def torchserve_ready(port: int, name: str, width: int) -> Callable[[], bool]:
    body = {"data": [[0.0] * width]}
    url = f"http://127.0.0.1:{port}/predictions/{name}"
    return lambda: httpx.post(url, json=body, timeout=30).status_code == 200


def run_model(name: str, model_dir: Path, work: Path, args: Any) -> dict[str, Any]:
    _, width, out_width = MODELS[name]
    python = sys.executable
    out: dict[str, Any] = {"servers": {}}

    def inprocess() -> dict[str, Any]:
        done = subprocess.run(
            [python, str(HERE / "inprocess.py"), str(model_dir), str(args.duration)]
            + [str(b) for b in INPROCESS_BATCHES],
            capture_output=True,
            text=True,
            preexec_fn=pinned(SERVER_CPUS),
            check=True,
        )
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    body, header_length = canned_response(model_dir, name, width)
    (work / f"{name}.response").write_bytes(body)
    runtime_env = {
        "PYTHONPATH": str(REPO / "runtime"),
        "MODELPLANE_MODEL_NAME": name,
        "MODELPLANE_MODEL_DIR": str(model_dir),
        "MODELPLANE_HOST": "127.0.0.1",
        "MODELPLANE_MAX_BATCH_SIZE": str(MAX_BATCH),
        "MODELPLANE_MAX_QUEUE_DELAY_MS": str(QUEUE_DELAY_MS),
    }
    store = work / f"{name}-store"

    def archive() -> None:
        # Only TorchServe needs a model archive (and the bench venv's archiver).
        if store.exists():
            return
        store.mkdir()
        subprocess.run(
            [
                str(Path(python).with_name("torch-model-archiver")),
                "--model-name",
                name,
                "--version",
                "1.0",
                "--handler",
                str(HERE / "torchserve_handler.py"),
                "--extra-files",
                str(model_dir / "model.pt2"),
                "--export-path",
                str(store),
                "--force",
            ],
            check=True,
        )

    def bare_uvicorn(app: str, port: int) -> list[str]:
        address = ["--host", "127.0.0.1", "--port", str(port)]
        quiet = ["--workers", "1", "--no-access-log", "--log-level", "warning"]
        return [python, "-m", "uvicorn", app, *address, *quiet]

    def echo(port: int) -> tuple[list[str], dict[str, str], Callable[[], bool], Path]:
        env = {
            "ECHO_RESPONSE_FILE": str(work / f"{name}.response"),
            "ECHO_HEADER_LENGTH": str(header_length),
        }
        ready = lambda: httpx.post(f"http://127.0.0.1:{port}/").status_code == 200  # noqa: E731
        return bare_uvicorn("echo_app:app", port), env, ready, HERE

    def bare(port: int) -> tuple[list[str], dict[str, str], Callable[[], bool], Path]:
        env = {"PYTHONPATH": str(REPO / "runtime"), "BARE_MODEL_DIR": str(model_dir)}
        ready = lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # noqa: E731
        return bare_uvicorn("bare_app:app", port), env, ready, HERE

    def modelplane(batching: bool, source: Path = REPO / "runtime") -> Callable[[int], Any]:
        def make(port: int) -> tuple[list[str], dict[str, str], Callable[[], bool], Path]:
            env = {
                **runtime_env,
                "PYTHONPATH": str(source),
                "MODELPLANE_PORT": str(port),
                "MODELPLANE_BATCHING": "true" if batching else "false",
            }
            return [python, "-m", "modelplane_runtime"], env, oip_ready(port, name), work

        return make

    def kserve(port: int) -> tuple[list[str], dict[str, str], Callable[[], bool], Path]:
        cmd = [python, str(HERE / "kserve_server.py"), str(model_dir), name, str(port)]
        return cmd, {}, oip_ready(port, name), work

    def torchserve(batching: bool) -> Callable[[int], Any]:
        def make(port: int) -> tuple[list[str], dict[str, str], Callable[[], bool], Path]:
            archive()
            home = work / f"ts-{name}-{int(batching)}"
            home.mkdir(exist_ok=True)
            batch = MAX_BATCH if batching else 1
            models = {
                name: {
                    "1.0": {
                        "defaultVersion": True,
                        "marName": f"{name}.mar",
                        "minWorkers": 1,
                        "maxWorkers": 1,
                        "batchSize": batch,
                        "maxBatchDelay": QUEUE_DELAY_MS,
                        "responseTimeout": 120,
                    }
                }
            }
            config = home / "config.properties"
            config.write_text(
                f"inference_address=http://127.0.0.1:{port}\n"
                f"management_address=http://127.0.0.1:{free_port()}\n"
                f"metrics_address=http://127.0.0.1:{free_port()}\n"
                # Both TorchServe instances run at once: nothing may use a default port.
                f"grpc_inference_port={free_port()}\ngrpc_management_port={free_port()}\n"
                f"initial_worker_port={free_port()}\n"
                "disable_token_authorization=true\nenable_envvars_config=false\n"
                f"default_workers_per_model=1\nmodel_store={store}\nload_models={name}.mar\n"
                f"models={json.dumps(models)}\n"
            )
            cmd = [
                str(Path(python).with_name("torchserve")),
                "--start",
                "--foreground",
                "--ncs",
                "--disable-token-auth",
                "--model-store",
                str(store),
                "--ts-config",
                str(config),
            ]
            # TorchServe keeps its pid file in the temp folder: one per instance.
            env = {"PATH": f"{Path(python).parent}:{os.environ['PATH']}", "TMPDIR": str(home)}
            return cmd, env, torchserve_ready(port, name, width), home

        return make

    servers: list[tuple[str, str, Callable[[int], Any]]] = [
        ("echo floor", "oip", echo),
        ("bare handler", "oip", bare),
        ("modelplane (batching)", "oip", modelplane(True)),
        ("modelplane (no batching)", "oip", modelplane(False)),
        ("kserve", "oip", kserve),
    ]
    if args.baseline:
        # The runtime as it was at another commit, measured in the same rounds as today's.
        before = baseline_runtime(args.baseline, work)
        servers += [
            (BASELINE_BATCHING, "oip", modelplane(True, before)),
            (BASELINE_NO_BATCHING, "oip", modelplane(False, before)),
        ]
    if shutil.which("java") and not args.skip_torchserve:
        servers += [
            ("torchserve", "torchserve", torchserve(False)),
            ("torchserve (batching)", "torchserve", torchserve(True)),
        ]
    if args.servers:
        servers = [s for s in servers if s[0] in args.servers.split(",")]
    running: list[tuple[str, str, int, Server]] = []
    try:
        # Every server stays up for the whole model, idle on the server CPU while another
        # one is measured, so that rounds can interleave them.
        for label, kind, make in servers:
            print(f"== {name}: starting {label}", flush=True)
            port = free_port()
            cmd, env, ready, cwd = make(port)
            safe = label.replace(" ", "_").replace("(", "").replace(")", "")
            server = Server(cmd, env, cwd, work / f"{name}-{safe}.log")
            try:
                server.wait(ready)
            except Exception as exc:
                server.stop()
                out["servers"][label] = {"error": str(exc)[-1000:]}
                print(f"    failed: {str(exc)[-400:]}", flush=True)
                continue
            measure(kind, port, name, width, out_width, server.process.pid, 16, 0, args.warmup)
            running.append((label, kind, port, server))
        inprocess_rounds: list[dict[str, Any]] = []
        points: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for round_ in range(args.rounds):
            inprocess_rounds.append(inprocess())
            # Each round starts with a different server, so none always follows the same one.
            shift = round_ % max(1, len(running))
            order = running[shift:] + running[:shift]
            for concurrency in CONCURRENCY:
                for label, kind, port, server in order:
                    row = measure(
                        kind,
                        port,
                        name,
                        width,
                        out_width,
                        server.process.pid,
                        concurrency,
                        args.duration,
                        args.point_warmup,
                    )
                    points.setdefault((label, concurrency), []).append(row)
            print(f"    round {round_ + 1}/{args.rounds} done", flush=True)
        out["inprocess"] = summarize_inprocess(inprocess_rounds)
        print(f"    in-process: {json.dumps(out['inprocess']['batches'])}", flush=True)
        for label, _, _, _ in running:
            rows = out["servers"][label] = {
                str(c): summarize(points[label, c]) for c in CONCURRENCY
            }
            for c in CONCURRENCY:
                shown = {k: v for k, v in rows[str(c)].items() if k != "rounds"}
                print(f"    {label:<26} c={c:<3} {json.dumps(shown)}", flush=True)
    finally:
        for _, _, _, server in running:
            server.stop()
    return out


BASELINE_BATCHING = "modelplane baseline (batching)"
BASELINE_NO_BATCHING = "modelplane baseline (no batching)"


def baseline_runtime(ref: str, work: Path) -> Path:
    """The runtime package at `ref`, unpacked from git into the work folder."""
    target = work / "baseline"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", ref, "runtime"], cwd=REPO, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "runtime"


def round_view(results: dict[str, Any], round_: int) -> dict[str, Any]:
    """The results as one round saw them: every point and in-process figure of that round."""
    view: dict[str, Any] = {}
    for model in ("tiny", "compute"):
        servers = {
            label: {c: row["rounds"][round_] for c, row in rows.items() if "rounds" in row}
            for label, rows in results[model]["servers"].items()
        }
        view[model] = {
            "servers": servers,
            "inprocess": results[model]["inprocess"]["rounds"][round_],
        }
    return view


def metric(results: dict[str, Any], model: str, server: str, c: int, key: str) -> float | None:
    row = results[model]["servers"].get(server, {}).get(str(c), {})
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each check's ratio in every round (numerator and denominator from the same round),
    reported as the median over rounds with the lowest and highest round beside it."""
    rounds = len(results["tiny"]["inprocess"]["rounds"])
    per_round = [round_checks(round_view(results, r)) for r in range(rounds)]
    combined = []
    for index, first in enumerate(per_round[0]):
        values = [checks[index]["ratio"] for checks in per_round]
        measured = [v for v in values if v is not None]
        ratio = statistics.median(measured) if measured else None
        threshold, higher = first["threshold"], first["higher"]
        met = None
        if threshold is not None and ratio is not None:
            met = ratio >= threshold if higher else ratio <= threshold
        sign = ">=" if higher else "<="
        combined.append(
            {
                "check": first["check"],
                "ratio": ratio,
                # Context rows help read a target; they are not targets themselves.
                "target": "context" if threshold is None else f"{sign} {threshold}",
                "met": met,
                "range": [min(measured), max(measured)] if measured else None,
                "rounds": values,
            }
        )
    return combined


def round_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check's ratio within one round's results."""
    checks = []

    def check(
        what: str, num: float | None, den: float | None, target: float | None, higher: bool
    ) -> None:
        ratio = None if num is None or not den else num / den
        checks.append({"check": what, "ratio": ratio, "threshold": target, "higher": higher})

    mp, mpn = "modelplane (batching)", "modelplane (no batching)"
    tiny = lambda s, k="rps": metric(results, "tiny", s, 16, k)  # noqa: E731
    big = lambda s, k="rps": metric(results, "compute", s, 16, k)  # noqa: E731
    check("tiny c16: modelplane (batching) / kserve throughput", tiny(mp), tiny("kserve"), 2, True)
    check(
        "tiny c16: modelplane (no batching) / kserve throughput", tiny(mpn), tiny("kserve"), 2, True
    )
    check("tiny c16: modelplane (batching) / echo floor", tiny(mp), tiny("echo floor"), 0.8, True)
    check(
        "tiny c16: modelplane (no batching) / echo floor", tiny(mpn), tiny("echo floor"), 0.8, True
    )
    check("compute c16: modelplane (batching) / kserve", big(mp), big("kserve"), 3, True)
    check(
        "compute c16: modelplane (batching) / torchserve (batching)",
        big(mp),
        big("torchserve (batching)"),
        1,
        True,
    )
    inproc16 = results["compute"]["inprocess"]["batches"]["16"]["rows_per_s"]
    check(
        "compute c16: modelplane (batching) rows/s / in-process batch 16",
        big(mp),
        inproc16,
        0.8,
        True,
    )
    # One core serves both HTTP and compute, and the load generator produces requests one
    # after another: a server that batches all 16 clients at once cannot beat receiving
    # 16 requests as fast as the echo floor does, then one forward pass of 16 rows.
    echo16 = big("echo floor")
    ceiling = None if not echo16 else 1 / (1 / echo16 + 1 / inproc16)
    check("compute c16: full-batch ceiling / in-process batch 16", ceiling, inproc16, None, True)
    check("compute c16: modelplane (batching) / full-batch ceiling", big(mp), ceiling, None, True)
    for model in ("tiny", "compute"):
        floor = metric(results, model, "echo floor", 1, "p50_ms")
        inprocess = results[model]["inprocess"]
        forward = inprocess["batches"]["1"]["p50_ms"]
        limit = None if floor is None else floor + forward
        for server in (mp, mpn):
            p50 = metric(results, model, server, 1, "p50_ms")
            check(f"{model} c1 p50: {server} / (forward + echo p50)", p50, limit, 1.3, False)
        # Back-to-back passes run with hot caches; a pass every few hundred microseconds,
        # as one client sends them, does not.
        paced = inprocess.get("paced_batch1_p50_ms")
        paced_limit = None if floor is None or paced is None else floor + paced
        p50 = metric(results, model, mp, 1, "p50_ms")
        check(f"{model} c1 p50: {mp} / (paced forward + echo p50)", p50, paced_limit, None, False)
        # The same forward pass behind the least Python that can answer: what is left for
        # the runtime's own validation, metrics and batching.
        bare_p50 = metric(results, model, "bare handler", 1, "p50_ms")
        check(f"{model} c1 p50: bare handler / (forward + echo p50)", bare_p50, limit, None, False)
    checks += baseline_checks(results)
    return checks


def baseline_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Today's runtime against the baseline commit's, point by point (with --baseline)."""
    checks = []
    pairs = (
        ("modelplane (batching)", BASELINE_BATCHING),
        ("modelplane (no batching)", BASELINE_NO_BATCHING),
    )
    for model in ("tiny", "compute"):
        for now, before in pairs:
            if before not in results[model]["servers"]:
                continue
            for c in (1, 16):
                num, den = (
                    metric(results, model, now, c, "rps"),
                    metric(results, model, before, c, "rps"),
                )
                ratio = None if num is None or not den else num / den
                # Throughput within 5% of the baseline's, measured in the same rounds.
                what = f"{model} c{c}: {now} / the same at the baseline commit"
                checks.append({"check": what, "ratio": ratio, "threshold": 0.95, "higher": True})
    return checks


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for column, model in enumerate(("tiny", "compute")):
        for label, rows in results[model]["servers"].items():
            xs = [c for c in CONCURRENCY if isinstance(rows.get(str(c), {}).get("rps"), float)]
            if not xs:
                continue
            axes[0][column].plot(xs, [rows[str(c)]["rps"] for c in xs], marker="o", label=label)
            axes[1][column].plot(xs, [rows[str(c)]["p50_ms"] for c in xs], marker="o", label=label)
        inproc = results[model]["inprocess"]["batches"]
        axes[0][column].axhline(
            inproc["16"]["rows_per_s"], linestyle="--", color="grey", label="in-process batch 16"
        )
        axes[0][column].set_title(f"{model}: rows/s (one row per request)")
        axes[1][column].set_title(f"{model}: p50 latency (ms)")
        for row in (0, 1):
            axes[row][column].set_xscale("log", base=2)
            axes[row][column].set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
            axes[row][column].set_xlabel("concurrency")
            axes[row][column].grid(alpha=0.3)
        # Log scales: the tiny model's in-process line sits 30x above every server.
        axes[0][column].set_yscale("log")
        axes[1][column].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=float, default=1.0, help="seconds measured per point and round"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds over every point, interleaving servers"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of load each server gets once"
    )
    parser.add_argument(
        "--point-warmup", type=float, default=0.3, help="unmeasured seconds before each point"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    parser.add_argument("--models", default="tiny,compute")
    parser.add_argument("--skip-torchserve", action="store_true")
    parser.add_argument("--servers", default="", help="comma-separated labels (default: all)")
    parser.add_argument(
        "--baseline", default="", help="a commit whose runtime is measured beside today's"
    )
    args = parser.parse_args()
    measured_at = commit()
    baseline = ""
    if args.baseline:
        baseline = subprocess.run(
            ["git", "rev-parse", "--short=12", args.baseline],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    print(
        f"runtime benchmark at commit {measured_at}"
        + (f", baseline {baseline}" if baseline else ""),
        flush=True,
    )
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs: one for the servers, one for the load generator")
    results: dict[str, Any] = {
        "commit": measured_at,
        "baseline_commit": baseline or None,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "server_cpus": sorted(SERVER_CPUS),
            "client_cpus": sorted(CLIENT_CPUS),
            # Other work on the machine skews every row alike; recorded to judge the run.
            "loadavg_at_start": os.getloadavg(),
        },
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "point_warmup_s": args.point_warmup,
            "max_batch_size": MAX_BATCH,
            "max_queue_delay_ms": QUEUE_DELAY_MS,
            "concurrency": list(CONCURRENCY),
        },
    }
    cpu_at_start = cpu_times()
    with tempfile.TemporaryDirectory(prefix="modelplane-bench-") as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            results[name] = run_model(name, build_model(name, work), work, args)
        if args.out:
            for log in work.glob("*.log"):
                shutil.copy(log, Path(tempfile.gettempdir()) / f"modelplane-bench-{log.name}")
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["machine"]["cpu_steal_share"] = steal_share(cpu_at_start, cpu_times())
    args.out.mkdir(parents=True, exist_ok=True)
    if {"tiny", "compute"} <= results.keys():
        results["ratios"] = ratios(results)
        plot(results, args.out / "runtime.png")
    for row in results.get("ratios", []):
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
        if row.get("range"):
            ratio += " ({:.2f}-{:.2f})".format(*row["range"])
        verdict = {True: "met", False: "NOT met", None: "n/a"}[row["met"]]
        if row["target"] == "context":
            verdict = "context"
        print(f"{row['check']:<72} {ratio:>17} (target {row['target']}): {verdict}")
    steal = results["machine"]["cpu_steal_share"]
    print(f"CPU time stolen by the hypervisor during the run: {steal:.1%}")
    for name in args.models.split(","):
        # The echo floor does the same work every round: its spread is the machine's noise.
        rounds = results[name]["servers"].get("echo floor", {}).get("16", {}).get("rounds", [])
        rates = [r["rps"] for r in rounds if r.get("rps")]
        if rates:
            spread = max(rates) / min(rates) - 1
            results["machine"].setdefault("echo_floor_c16_round_spread", {})[name] = spread
            print(f"{name}: the echo floor's c16 throughput varied by {spread:.0%} across rounds")
    (args.out / "runtime.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'runtime.json'} and runtime.png")


if __name__ == "__main__":
    main()
