#!/usr/bin/env python3
"""Start, inspect and stop the local modelplane test cluster.

python hack/cluster.py up        # build tools if needed, start, print KUBECONFIG
python hack/cluster.py status    # components and nodes
python hack/cluster.py down      # stop everything, delete its data
python hack/cluster.py pull-images   # the real node's containerd pulls the built images
python hack/cluster.py leftovers # what a stopped real node left behind (empty: nothing)

MODELPLANE_REAL_NODE=0 starts no real node; =1 fails when it cannot start one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster import HACK_DIR, LocalCluster, default_nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "command", choices=["up", "down", "status", "kubeconfig", "pull-images", "leftovers"]
    )
    parser.add_argument("--name", default="modelplane", help="cluster name (state folder)")
    parser.add_argument("--cpu-nodes", type=int, default=2)
    parser.add_argument("--gpu-nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.name)

    if args.command == "up":
        subprocess.run(
            ["bash", str(HACK_DIR / "build-tools.sh")], check=True, stdout=subprocess.DEVNULL
        )
        reused = cluster.is_running()
        cluster.start(default_nodes(args.cpu_nodes, args.gpu_nodes, args.gpus_per_node))
        print(f"cluster {args.name!r} {'already running' if reused else 'started'}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if args.command == "down":
        cluster.stop()
        print(f"cluster {args.name!r} stopped")
        return 0
    if args.command == "kubeconfig":
        print(cluster.kubeconfig)
        return 0
    if args.command == "pull-images":
        from localcluster import node

        owner = LocalCluster(node.owner() or args.name)  # the cluster running node-0
        for ref in node.pull_images(owner):
            print(f"pulled {ref}")
        return 0
    if args.command == "leftovers":
        from localcluster import node

        found = node.leftovers()
        print("\n".join(found) or "nothing left behind")
        return 1 if found else 0
    state = cluster.state()
    if state is None or not cluster.is_running():
        print(f"cluster {args.name!r} is not running")
        return 1
    print(f"cluster {args.name!r} at {state.server}, KUBECONFIG={cluster.kubeconfig}")
    print(cluster.kubectl("version").stdout)
    print(
        cluster.kubectl(
            "get",
            "nodes",
            "-L",
            "nvidia.com/gpu.product",
            "-o",
            "custom-columns=NAME:.metadata.name,STATUS:.status.conditions[?(@.type=='Ready')].type,"
            "GPUS:.status.allocatable.nvidia\\.com/gpu,PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product,"
            "TAINTS:.spec.taints[*].key",
        ).stdout
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
