# modelplane task file. Heavy caches live outside the repository, in $(MODELPLANE_CACHE).
MODELPLANE_CACHE ?= $(HOME)/.cache/modelplane
export MODELPLANE_CACHE
VENV ?= $(MODELPLANE_CACHE)/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv tools images cluster cluster-down cluster-status operator demo chart-sync bundle reliability bench-precision bench-venv bench-runtime bench-operator canary-plot lint test test-unit test-server test-cluster test-node kind clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# Reinstalled when pyproject.toml changes or another checkout installed itself here.
VENV_STAMP = $(CURDIR) $(shell cat pyproject.toml | md5sum | cut -c1-12)
venv: ## Python environment with every extra (in the cache folder)
	@if [ "$$(cat $(VENV)/.installed 2>/dev/null)" != "$(VENV_STAMP)" ]; then \
	  set -e; python3 -m venv $(VENV); \
	  $(PY) -m pip install --quiet --upgrade pip; \
	  $(PY) -m pip install --quiet -e '.[dev]'; \
	  echo "$(VENV_STAMP)" > $(VENV)/.installed; \
	fi

tools: ## build etcd, kube-*, kubelet, kube-proxy, CoreDNS, containerd, kwok and helm into the cache (cold: ~25 min)
	bash hack/build-tools.sh

images: venv ## build the runtime, storage-initializer and operator images (buildah, no Docker)
	bash hack/images.sh

cluster: venv tools images ## start the local cluster: simulated CPU/GPU nodes and the real node-0
	$(PY) hack/cluster.py up

cluster-down: ## stop the local control plane
	$(PY) hack/cluster.py down

cluster-status: ## show components and nodes
	$(PY) hack/cluster.py status

operator: venv ## run the operator in the foreground against the local cluster
	$(PY) hack/run-operator.py

demo: ## the newcomer's first command: set up and run the demo
	bash hack/demo.sh

lint: venv tools ## ruff, mypy, import layers, function lengths and helm lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) hack/function_lengths.py
	@dups=$$(find tests -name 'test_*.py' -printf '%f\n' | sort | uniq -d); \
	  if [ -n "$$dups" ]; then echo "test files share a basename (pytest cannot collect both): $$dups"; exit 1; fi
	PYTHONPATH=operator:runtime $(VENV)/bin/lint-imports --no-cache
	$(MODELPLANE_CACHE)/bin/helm lint --strict charts/modelplane

chart-sync: ## copy crds/ into the chart after changing the CRD
	bash hack/sync-chart-crds.sh

bundle: tools ## render deploy/modelplane.yaml from the chart
	bash hack/render-bundle.sh

test-unit: venv ## fast tests, no cluster (tests/*/unit)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-server: venv ## runtime server processes on 127.0.0.1, no cluster (tests/runtime/server)
	$(PY) -m pytest -m server $(PYTEST_ARGS)

test-cluster: venv tools ## the local control plane with simulated nodes (tests/*/cluster)
	$(PY) -m pytest -m "cluster and not node" $(PYTEST_ARGS)

test-node: venv tools images ## modelplane's images in real pods on node-0 (tests/*/node)
	$(PY) -m pytest -m node $(PYTEST_ARGS)

test: venv tools lint images ## every test: lint, unit, cluster, real node (gpu and kind skip where absent)
	$(PY) -m pytest $(PYTEST_ARGS)

reliability: venv tools ## the reliability suites in soak mode: writes docs/reliability.md
	MODELPLANE_SOAK=1 MODELPLANE_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md \
	  $(PY) -m pytest -m "reliability or found" $(PYTEST_ARGS)

bench-precision: venv ## precision benchmark (float16/bfloat16 on CUDA, int8): docs/benchmarks/precision.*
	$(PY) benchmarks/runtime/precision.py

bench-venv: ## a separate environment for the runtime benchmark's peers (kserve, torchserve)
	python3 -m venv $(MODELPLANE_CACHE)/bench-venv
	$(MODELPLANE_CACHE)/bench-venv/bin/pip install --quiet -e '.[runtime,test,bench]'

bench-runtime: bench-venv ## runtime benchmark (BENCH_ARGS="--baseline REF" adds a commit's runtime): docs/benchmarks/runtime.*
	$(MODELPLANE_CACHE)/bench-venv/bin/python benchmarks/runtime/bench.py $(BENCH_ARGS)

bench-operator: venv tools ## operator benchmark at 1000 objects: writes docs/benchmarks/operator.*
	$(PY) benchmarks/operator/bench.py

canary-plot: venv tools images ## a real aborted canary on the real node: docs/benchmarks/canary-abort.json, docs/canary-abort.png
	MODELPLANE_REAL_NODE=1 MODELPLANE_CANARY_TIMELINE=$(CURDIR)/docs/benchmarks/canary-abort.json \
	  $(PY) -m pytest -q tests/operator/node/test_node_analysis.py -k fails_a_share
	$(PY) benchmarks/canary/plot.py

kind: ## a kind cluster for users with Docker
	bash hack/kind.sh

clean: ## remove the Python environment (the Go build cache is kept)
	rm -rf $(VENV)
