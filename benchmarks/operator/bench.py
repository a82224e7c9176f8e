#!/usr/bin/env python3
"""Operator performance at scale, against the real local control plane.

Measures in one run, on a fresh cluster of simulated nodes:
- converge: N ModelDeployments Ready, against the same N Deployments + Services
  applied directly with server-side apply (the raw floor); target within 1.2x;
- reconcile latency, spec change -> child updated (p50, p99), at 10, 100 and N;
- API writes by the operator at steady state: 100 objects idle, and after an
  operator restart (target: zero, counted from the API server's audit log);
- operator memory (RSS) with N objects (target: at most 150 MiB);
- API requests per reconcile and total QPS during the N-object converge.

Results go to docs/benchmarks/operator.json and operator.png, and a table is
printed. Run: python benchmarks/operator/bench.py [--objects 1000] [--nodes 50]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "hack"), str(REPO / "operator")]

from clusterkit import Cluster  # noqa: E402
from localcluster import LocalCluster, NodeSpec  # noqa: E402
from modelplane_operator.config import OperatorConfig  # noqa: E402
from modelplane_operator.manifests import build_deployment, build_pod_template, build_service  # noqa: E402
from modelplane_operator.revisions import template_hash  # noqa: E402
from modelplane_operator.spec import parse  # noqa: E402
from operatorkit import USERNAME, OperatorProcess  # noqa: E402
from provenance import commit  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
RUNTIME_IMAGE = "registry.invalid/modelplane/runtime:test"  # the image OperatorProcess passes
TARGET_RATIO, TARGET_RSS_MIB, TARGET_WRITES = 1.2, 150.0, 0


def md_manifest(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"version": "1.0.0", "uri": f"s3://models/{name}/1.0.0"},
            "runtime": {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
            "replicas": replicas,
        },
    }


def raw_children(name: str, namespace: str) -> list[dict[str, Any]]:
    """What the operator would create for md_manifest(name), without an owner."""
    body = md_manifest(name)
    body["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), generation=1)
    md = parse(body)
    config = OperatorConfig(runtime_image=RUNTIME_IMAGE)
    objs = [
        build_deployment(md, config, 1, template_hash(build_pod_template(md, config)), 1),
        build_service(md),
    ]
    for obj in objs:
        del obj["metadata"]["ownerReferences"]
    return objs


class Api:
    """Thin clients for the benchmark's own reads and applies."""

    def __init__(self, cluster: Cluster) -> None:
        from kubernetes import client

        self.client = client.ApiClient(cluster.api_client().configuration)
        self.client.configuration.connection_pool_maxsize = 16
        self.apps = client.AppsV1Api(self.client)
        self.core = client.CoreV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)

    def apply(self, obj: dict[str, Any], namespace: str) -> None:
        kw = {
            "field_manager": "bench",
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        name, kind = obj["metadata"]["name"], obj["kind"]
        if kind == "Deployment":
            self.apps.patch_namespaced_deployment(name, namespace, obj, **kw)
        elif kind == "Service":
            self.core.patch_namespaced_service(name, namespace, obj, **kw)
        else:
            self.custom.patch_namespaced_custom_object(
                "modelplane.io", "v1alpha1", namespace, "modeldeployments", name, obj, **kw
            )

    def available_deployments(self, namespace: str) -> int:
        items = json.loads(
            self.apps.list_namespaced_deployment(namespace, _preload_content=False).data
        )["items"]
        return sum(1 for d in items if d.get("status", {}).get("availableReplicas", 0) >= 1)

    def ready_mds(self, namespace: str) -> int:
        items = json.loads(
            self.custom.list_namespaced_custom_object(
                "modelplane.io", "v1alpha1", namespace, "modeldeployments", _preload_content=False
            ).data
        )["items"]
        return sum(
            1
            for m in items
            if any(
                c["type"] == "Ready"
                and c["status"] == "True"
                and c.get("observedGeneration") == m["metadata"]["generation"]
                for c in m.get("status", {}).get("conditions", [])
            )
        )


def apply_all(api: Api, objects: list[dict[str, Any]], namespace: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: api.apply(o, namespace), objects))


def wait_count(probe: Any, want: int, what: str, timeout: float = 1800) -> float:
    start = time.monotonic()
    while True:
        got = probe()
        if got >= want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: {got}/{want} after {timeout}s")
        time.sleep(0.5)


def metric(operator: OperatorProcess, name: str) -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.split()[-1])
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(cluster: Cluster, api: Api, namespace: str, names: list[str]) -> list[float]:
    """Seconds from a replicas change of each ModelDeployment to its Deployment following."""
    out = []
    for name in names:
        current = json.loads(
            api.apps.read_namespaced_deployment(
                f"{name}-r1", namespace, _preload_content=False
            ).data
        )["spec"]["replicas"]
        want = 2 if current == 1 else 1
        start = time.monotonic()
        api.apply({**md_manifest(name, replicas=want)}, namespace)
        while True:
            dep = json.loads(
                api.apps.read_namespaced_deployment(
                    f"{name}-r1", namespace, _preload_content=False
                ).data
            )
            if dep["spec"]["replicas"] == want:
                break
            if time.monotonic() - start > 60:
                raise TimeoutError(f"{name}: child not updated")
            time.sleep(0.01)
        out.append(time.monotonic() - start)
    return out


def writes_since(cluster: Cluster, since: datetime.datetime, namespace: str) -> int:
    return sum(
        1
        for e in cluster.audit_events()
        if e["user"]["username"] == USERNAME
        and e["objectRef"].get("namespace") == namespace
        and datetime.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
        >= since
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="redo the plot, table and README from docs/benchmarks/operator.json",
    )
    args = parser.parse_args()
    if args.report_only:
        return report(json.loads((OUT / "operator.json").read_text()))
    n = args.objects
    results: dict[str, Any] = {
        "objects": n,
        "nodes": args.nodes,
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "commit": commit(),
    }
    print(f"operator benchmark at commit {results['commit']}", flush=True)

    local = LocalCluster(name="bench")
    gpu_nodes = max(1, args.nodes // 5)
    nodes = [
        NodeSpec(name=f"cpu-{i}", cpu="64", memory="256Gi") for i in range(args.nodes - gpu_nodes)
    ]
    nodes += [NodeSpec(name=f"gpu-{i}", gpus=8) for i in range(gpu_nodes)]
    print(f"starting a local control plane with {len(nodes)} simulated nodes ...", flush=True)
    local.start(nodes)
    cluster = Cluster.for_local(local)
    work = Path(tempfile.mkdtemp(prefix="modelplane-bench-"))
    operator = OperatorProcess(cluster, work)
    try:
        api = Api(cluster)
        operator.install()

        # 1. Raw floor: the same Deployments and Services, applied directly.
        cluster.kubectl("create", "namespace", "raw")
        objects = [o for i in range(n) for o in raw_children(f"m{i}", "raw")]
        start = time.monotonic()
        apply_all(api, objects, "raw")
        wait_count(lambda: api.available_deployments("raw"), n, "raw Deployments available")
        raw_s = time.monotonic() - start
        print(f"raw floor: {n} Deployments + Services available in {raw_s:.1f} s", flush=True)
        cluster.kubectl("delete", "namespace", "raw", "--timeout=600s")

        # 2. Latency at 10 and 100 objects; steady-state writes with 100 idle.
        operator.start()
        cluster.kubectl("create", "namespace", "small")
        lat: dict[str, list[float]] = {}
        for size in (10, 100):
            apply_all(api, [md_manifest(f"s{i}") for i in range(size)], "small")
            wait_count(lambda: api.ready_mds("small"), size, f"{size} ModelDeployments Ready")
            time.sleep(2)
            lat[str(size)] = latency(
                cluster, api, "small", [f"s{i}" for i in range(min(size, args.samples))]
            )
            wait_count(lambda: api.ready_mds("small"), size, f"{size} ModelDeployments Ready")
            print(
                f"latency at {size}: p50 {1000 * statistics.median(lat[str(size)]):.0f} ms",
                flush=True,
            )
        time.sleep(5)
        since = datetime.datetime.now(datetime.UTC)
        time.sleep(args.idle_seconds)
        idle_writes = writes_since(cluster, since, "small")
        operator.stop()
        since = datetime.datetime.now(datetime.UTC)
        operator.start()
        time.sleep(20)
        restart_writes = writes_since(cluster, since, "small")
        print(
            f"steady state: {idle_writes} writes in {args.idle_seconds:.0f} s idle, "
            f"{restart_writes} after a restart",
            flush=True,
        )
        cluster.kubectl("delete", "namespace", "small", "--timeout=600s")

        # 3. Converge N through the operator.
        cluster.kubectl("create", "namespace", "big")
        requests0 = metric(operator, "modelplane_api_requests_total")
        reconciles0 = metric(operator, "modelplane_reconciles_total")
        start = time.monotonic()
        apply_all(api, [md_manifest(f"m{i}") for i in range(n)], "big")
        wait_count(lambda: api.ready_mds("big"), n, f"{n} ModelDeployments Ready")
        op_s = time.monotonic() - start
        requests = metric(operator, "modelplane_api_requests_total") - requests0
        reconciles = metric(operator, "modelplane_reconciles_total") - reconciles0
        time.sleep(3)
        rss = rss_mib(operator.proc.pid) if operator.proc else float("nan")
        print(
            f"operator: {n} ModelDeployments Ready in {op_s:.1f} s "
            f"({op_s / raw_s:.2f}x raw), RSS {rss:.0f} MiB",
            flush=True,
        )
        lat[str(n)] = latency(
            cluster,
            api,
            "big",
            [f"m{i}" for i in range(0, n, max(1, n // args.samples))][: args.samples],
        )

        results.update(
            raw_converge_s=round(raw_s, 2),
            operator_converge_s=round(op_s, 2),
            converge_ratio=round(op_s / raw_s, 3),
            converge_target_ratio=TARGET_RATIO,
            latency_ms={
                size: {
                    "p50": round(1000 * percentile(v, 0.5), 1),
                    "p99": round(1000 * percentile(v, 0.99), 1),
                    "samples": len(v),
                }
                for size, v in lat.items()
            },
            idle_writes=idle_writes,
            idle_seconds=args.idle_seconds,
            restart_writes=restart_writes,
            rss_mib=round(rss, 1),
            rss_target_mib=TARGET_RSS_MIB,
            reconciles=int(reconciles),
            api_requests=int(requests),
            requests_per_reconcile=round(requests / reconciles, 2) if reconciles else None,
            qps=round(requests / op_s, 1),
        )
    finally:
        operator.stop()
        local.stop()

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "operator.json").write_text(json.dumps(results, indent=2) + "\n")
    return report(results)


def report(results: dict[str, Any]) -> int:
    plot(results, OUT / "operator.png")
    table = print_table(results)
    (OUT / "operator.md").write_text(table + "\n")
    update_readme(table)
    return 0


README_START, README_END = "<!-- operator-benchmark:start -->", "<!-- operator-benchmark:end -->"


def update_readme(table: str) -> None:
    """Put the table between the markers in README.md (results come from the script)."""
    readme = REPO / "README.md"
    text = readme.read_text()
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        readme.write_text(f"{head}{README_START}\n{table}\n{README_END}{tail}")


def print_table(r: dict[str, Any]) -> str:
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    rows = [
        (
            f"{r['objects']} ModelDeployments Ready vs raw Deployments+Services",
            f"{r['operator_converge_s']} s vs {r['raw_converge_s']} s = {r['converge_ratio']}x",
            f"<= {TARGET_RATIO}x",
            ok(r["converge_ratio"] <= TARGET_RATIO),
        ),
        *[
            (
                f"spec change -> child updated, {size} objects",
                f"p50 {v['p50']} ms, p99 {v['p99']} ms",
                "",
                "",
            )
            for size, v in r["latency_ms"].items()
        ],
        (
            f"operator writes, 100 objects idle {r['idle_seconds']:.0f} s",
            str(r["idle_writes"]),
            "0",
            ok(r["idle_writes"] == 0),
        ),
        (
            "operator writes after a restart (100 objects)",
            str(r["restart_writes"]),
            "0",
            ok(r["restart_writes"] == 0),
        ),
        (
            f"operator RSS with {r['objects']} objects",
            f"{r['rss_mib']} MiB",
            f"<= {TARGET_RSS_MIB:.0f} MiB",
            ok(r["rss_mib"] <= TARGET_RSS_MIB),
        ),
        (
            "API requests per reconcile / QPS during converge",
            f"{r['requests_per_reconcile']} / {r['qps']}",
            "",
            "",
        ),
    ]
    lines = ["| measure | result | target | |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append(
        f"\n{r['nodes']} simulated nodes, {r['date'][:10]}, commit "
        f"`{r.get('commit', 'not recorded')}`; raw data in "
        "docs/benchmarks/operator.json, plot in docs/benchmarks/operator.png."
    )
    table = "\n".join(lines)
    print("\n" + table)
    return table


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(
        ["raw SSA", "modelplane"],
        [r["raw_converge_s"], r["operator_converge_s"]],
        color=["grey", "tab:blue"],
    )
    left.axhline(r["raw_converge_s"] * TARGET_RATIO, color="red", linestyle="--", label="1.2x raw")
    left.set_ylabel("seconds")
    left.set_title(f"{r['objects']} objects to Ready")
    left.legend()
    sizes = list(r["latency_ms"])
    right.plot(sizes, [r["latency_ms"][s]["p50"] for s in sizes], marker="o", label="p50")
    right.plot(sizes, [r["latency_ms"][s]["p99"] for s in sizes], marker="o", label="p99")
    right.set_xlabel("ModelDeployments")
    right.set_ylabel("ms")
    right.set_title("spec change -> child updated")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
