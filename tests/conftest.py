"""Shared fixtures: the test cluster, a namespace per test, marker handling.

The cluster is the project's own local control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok), started once per session and
stopped at its end. Set MODELPLANE_TEST_KUBECONFIG to run the same tests
against another cluster instead (a kind cluster, say); an ambient KUBECONFIG is
deliberately not picked up, so `make test` never touches a cluster by accident.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, ExternalCluster
from reliabilitykit import REPORT_ENV, Finding, Recorder, Report

REPORT_KEY = pytest.StashKey[Report]()

# Tests live in tests/<component>/<tier>/ (component: operator, runtime, chart,
# localcluster, tooling); the tier folder's name gives the markers `-m` selects on.
TIER_MARKERS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "unit": (pytest.mark.unit,),
    "server": (pytest.mark.server,),
    "cluster": (pytest.mark.cluster,),
    "node": (pytest.mark.cluster, pytest.mark.node),
}

# The real-node fixtures (node-0, the built images, the model store) serve the node tier
# of every component, so they are a plugin rather than one folder's conftest.
pytest_plugins = ["nodefixtures"]

TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder; skip gpu/kind tests where their hardware is absent."""
    skip_gpu = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    skip_kind = pytest.mark.skip(reason="needs a running Docker engine for kind")
    report = config.stash[REPORT_KEY]
    for item in items:
        found = item.get_closest_marker("found")
        if found is not None:
            report.findings[item.nodeid] = Finding(found.args[0], item.nodeid)
        suite = item.get_closest_marker("reliability")
        if suite is not None:
            report.recorder(item.nodeid, suite.args[0], _title(item))
        for marker in TIER_MARKERS.get(Path(str(item.fspath)).parent.name, ()):
            item.add_marker(marker)
        if "gpu" in item.keywords and not _cuda_available():
            item.add_marker(skip_gpu)
        if "kind" in item.keywords and not _docker_engine_running():
            item.add_marker(skip_kind)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REPORT_KEY] = Report()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Outcomes of reliability and regression tests, for docs/reliability.md."""
    report: pytest.TestReport = yield
    if report.when == "call" or report.outcome != "passed":
        store = item.config.stash[REPORT_KEY]
        for entry in (store.tests.get(item.nodeid), store.findings.get(item.nodeid)):
            if entry is not None:
                entry.outcome = report.outcome
        if item.nodeid in store.tests and report.when == "call":
            store.tests[item.nodeid].seconds = report.duration
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(session.config.stash[REPORT_KEY].render())


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    """Figures for docs/reliability.md (tests marked ``reliability("Suite")``)."""
    marker = request.node.get_closest_marker("reliability")
    assert marker is not None, "mark the test @pytest.mark.reliability('Suite')"
    report = request.config.stash[REPORT_KEY]
    return report.recorder(request.node.nodeid, marker.args[0], _title(request.node))


def _title(item: Any) -> str:
    """A test's docstring's first line, else its name with spaces."""
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    title = str(doc).strip().splitlines()[0] if doc else str(item.originalname)
    callspec = getattr(item, "callspec", None)
    return f"{title} [{callspec.id}]" if callspec else title


def _cuda_available() -> bool:
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _docker_engine_running() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A running cluster for the whole session."""
    external = os.environ.get("MODELPLANE_TEST_KUBECONFIG")
    if external:
        yield ExternalCluster(Path(external))
        return
    from localcluster import LocalCluster, default_nodes

    local = LocalCluster(name=f"pytest-{os.getpid()}")
    try:
        local.start(default_nodes())
        yield Cluster.for_local(local)
    finally:
        real_node = local.real_node
        local.stop()
    if real_node:
        from localcluster import node

        # cluster-down and the fixtures leave nothing behind: processes, mounts,
        # network namespaces, links, routes, iptables chains.
        left = node.leftovers()
        assert not left, "the real node's teardown left:\n" + "\n".join(left)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    base = request.node.name.lower().replace("_", "-")
    name = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The operator, running as its own ServiceAccount, for the whole session."""
    from operatorkit import OperatorProcess

    proc = OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    proc.install()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\n--- operator log (tail) ---\n{proc.log_tail(60)}")


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """The modelplane CRDs installed (the operator fixture installs them too)."""
    from operatorkit import install_crds

    install_crds(cluster)
