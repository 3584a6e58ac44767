# Roomwire — every target works on a fresh machine: it creates .venv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: run test test-fast lint bench soak chaos fuzz cluster-up cluster-down deps clean images demo demo-down demo-scale-out

# Three distributions ship (contract/, workload/, operator/: one pyproject.toml each); the
# root project is the development install (those three, devcluster, the tools). pip is
# given every path at once, so the root's requirements on the three resolve to them.
DISTS := pyproject.toml contract/pyproject.toml workload/pyproject.toml operator/pyproject.toml

# `make run` needs only the workload and the contract.
$(RUN_STAMP): $(DISTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ./contract -e ./workload
	touch $(RUN_STAMP)

$(STAMP): $(DISTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ./contract -e ./workload -e ./operator -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

## run: one signaling process, in-memory registry, demo page on http://127.0.0.1:8080/
run: $(RUN_STAMP)
	$(PY) -m signaling serve $(RUN_ARGS)

## deps: system packages the tests need (redis-server, chromium, promtool), installed when missing
deps:
	bash scripts/ensure-deps.sh

## lint: ruff, mypy --strict and the import-linter layering contracts
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## test: lint, then the whole suite (pytest exit 5 — nothing collected — fails too)
test: $(STAMP) deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: the suite without browser, cluster and image tests
test-fast: $(STAMP)
	$(PY) -m pytest -m 'not browser and not cluster and not images' $(PYTEST_ARGS)

## fuzz: the fuzzer's long mode, a million frames at two pods (make test sends 100,000)
fuzz: $(STAMP) deps
	ROOMWIRE_FUZZ_FRAMES=$${ROOMWIRE_FUZZ_FRAMES:-1000000} $(PY) -m pytest -s tests/workload/test_fuzz.py tests/unit/test_protocol_stateful.py

## bench: benchmarks with baselines measured in the same run; see bench/RESULTS.md
bench: $(STAMP) deps
	$(PY) -m bench

## soak: 30 minutes (SOAK_MINUTES) of cross-pod load, churn and pod replacements; RSS, fds, Redis memory slopes
SOAK_MINUTES ?= 30
soak: $(STAMP) deps
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m bench.soak

## chaos: the chaos table's long mode on the local cluster (make test runs the short one); docs/reliability.md
CHAOS_CLIENTS ?= 60
CHAOS_STEADY_S ?= 30
chaos: $(STAMP) deps
	ROOMWIRE_CHAOS_CLIENTS=$(CHAOS_CLIENTS) ROOMWIRE_CHAOS_STEADY_S=$(CHAOS_STEADY_S) \
		$(PY) -m pytest -m cluster -s -p no:cacheprovider --timeout=900 tests/chaos $(PYTEST_ARGS)

## cluster-up / cluster-down: local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, node agent)
## RUNTIME=podman: the node agent runs pods' containers from the built images (docs/images.md)
RUNTIME ?= process
cluster-up: $(STAMP) $(if $(filter podman,$(RUNTIME)),images)
	DEVCLUSTER_RUNTIME=$(RUNTIME) $(PY) -m devcluster up

cluster-down: $(STAMP)
	$(PY) -m devcluster down

## demo: local cluster, manifests/ and samples, simulated participants, live view, Prometheus; prints the URLs
demo: $(STAMP) deps
	$(PY) -m devcluster.demo up

## demo-down: stops everything demo started, then the cluster
demo-down: $(STAMP)
	$(PY) -m devcluster.demo down

## demo-scale-out: a 300-seat room: the operator scales out, then rebalances (watch the live view)
demo-scale-out: $(STAMP)
	$(PY) -m devcluster.demo scale-out

## images: roomwire/signaling and roomwire/operator built with podman, tagged with the version (docs/images.md)
images:
	bash scripts/build-images.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
