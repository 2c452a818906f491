# Two commands a newcomer runs:  make demo   and   make test   (both set the machine up first).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
VLA := $(VENV)/bin/vla
# QUICK=1 shrinks the demo to a few minutes on 2 CPU cores.
QUICK ?= 0
DEMO_TASK ?= DualArmLiftBar-v1
DEMO_DIR ?= data/$(DEMO_TASK)
ifeq ($(QUICK),1)
DEMO_EPISODES ?= 4
else
DEMO_EPISODES ?= 40
endif
PYTEST_ARGS ?=

.PHONY: help setup demo test test-fast bench-experts bench-recording clean-demo

help:
	@echo "make demo        set up, record expert demos of $(DEMO_TASK) (QUICK=1: a short version)"
	@echo "make test        set up, run the whole test suite (what CI runs)"
	@echo "make test-fast   unit tests only (no simulator, no browser)"
	@echo "make setup       system packages + .venv (idempotent)"

setup:
	@scripts/setup.sh

demo: setup
	$(VLA) demos --task $(DEMO_TASK) --episodes $(DEMO_EPISODES) --out $(DEMO_DIR) --image-size 128 --cameras head,left_wrist,right_wrist
	@echo
	@echo "Recorded $(DEMO_EPISODES) episodes into $(DEMO_DIR) (see $(DEMO_DIR)/dataset.json)."

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not maniskill and not render and not browser and not slow and not gpu" $(PYTEST_ARGS)

bench-experts: setup
	$(PY) -m benchmarks.bench_experts --seeds 0:100

bench-recording: setup
	$(PY) -m benchmarks.bench_recording

clean-demo:
	rm -rf data/$(DEMO_TASK) runs/demo results/demo
