# Two commands a newcomer runs:  make demo   and   make test   (both set the machine up first).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
VLA := $(VENV)/bin/vla
# QUICK=1 shrinks the demo to a few minutes on 2 CPU cores; DEMO_ARGS passes more flags to scripts/demo.py
# (e.g. DEMO_ARGS="--episodes 100 --eval-seeds 100000:100020"; see .venv/bin/python -m scripts.demo --help).
QUICK ?= 0
# MULTITASK=1: one VLA for three tasks incl. a language-grounding one (benchmarks/recipes/tiny-multitask.yaml)
MULTITASK ?= 0
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup demo test test-fast lint bench-experts bench-recording clean-demo

help:
	@echo "make demo        set up, record demos, train the tiny VLA, benchmark it, build the gallery (QUICK=1: short)"
	@echo "                 (MULTITASK=1: one VLA for three tasks, seen/unseen + counterfactual benchmarks)"
	@echo "make test        set up, run the whole test suite (what CI runs)"
	@echo "make test-fast   unit tests only (no simulator, no browser)"
	@echo "make lint        ruff check + ruff format --check (part of make test)"
	@echo "make setup       system packages + .venv (idempotent)"

setup:
	@scripts/setup.sh

demo: setup
	$(PY) -m scripts.demo $(if $(filter 1,$(QUICK)),--quick,) $(if $(filter 1,$(MULTITASK)),--multitask,) $(DEMO_ARGS)

test: setup lint
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test-fast: setup
	$(PY) -m pytest -q -m "not maniskill and not render and not browser and not slow and not gpu" $(PYTEST_ARGS)

bench-experts: setup
	$(PY) -m benchmarks.bench_experts --seeds 0:100

bench-recording: setup
	$(PY) -m benchmarks.bench_recording

clean-demo:
	rm -rf data/DualArmLiftBar-v1 data/DualArmLiftBar-v1-quick runs/demo runs/demo-quick results/demo results/demo-quick
	rm -rf data/multitask runs/demo-multitask* results/demo-multitask*
