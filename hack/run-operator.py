#!/usr/bin/env python3
"""Run the operator out of cluster against the local cluster, as its ServiceAccount.

Installs the CRD and deploy/rbac.yaml, mints a token for the operator's
ServiceAccount and runs `modelplane-operator --all-namespaces` with it, so the
operator has exactly its in-cluster permissions. With MODELPLANE_OPERATOR_SA set to
"namespace/name" it uses that ServiceAccount instead (a Helm release's) and applies
nothing. Extra arguments go to the operator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusterkit import Cluster
from localcluster import LocalCluster
from operatorkit import install_crds, python_path, registry_env, token_kubeconfig


def main() -> int:
    local = LocalCluster(os.environ.get("MODELPLANE_CLUSTER", "modelplane"))
    if not local.is_running():
        print("the local cluster is not running: make cluster", file=sys.stderr)
        return 1
    cluster = Cluster.for_local(local)
    install_crds(cluster)
    service_account = None
    if chosen := os.environ.get("MODELPLANE_OPERATOR_SA"):
        namespace, _, name = chosen.partition("/")
        service_account = (namespace, name)
    kubeconfig = token_kubeconfig(
        cluster, local.dir / "operator.kubeconfig", service_account=service_account
    )
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ["PYTHONPATH"] = python_path()
    for key, value in registry_env(cluster).items():  # the cluster's registries, trusted
        os.environ.setdefault(key, value)
    args = [sys.executable, "-m", "modelplane_operator", "--all-namespaces", "--log-format=plain"]
    os.execv(sys.executable, [*args, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
