# Set-up and everyday commands. `make help` lists them.
PYTHON ?= python
# CPU wheel on CPU-only machines; on a GPU machine use e.g. TORCH_SPEC="torch==2.13.0" with PyPI's CUDA build
# or TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu126" (see README).
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
# Test processes (pytest-xdist): one per CPU this process may use, at most 4 (each needs a few GB); TEST_WORKERS=0
# runs the tests in pytest's own process (for --pdb).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()))")
PYTEST = $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist worksteal

.PHONY: help install train test test-full lint format clean

help:  ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

install:  ## Install torch (CPU build by default), the package in editable mode, and dev tools
	$(PYTHON) -m pip install --quiet "$(TORCH_SPEC)"
	$(PYTHON) -m pip install --quiet -e ".[dev]"

train: install  ## Train the default task (translation on the embedded data); pass overrides via ARGS="..."
	$(PYTHON) train.py $(ARGS)

test: install  ## Run the fast tests
	$(PYTEST) -m "not slow" $(ARGS)

test-full: install  ## Run the whole test suite, slow end-to-end tests included (what CI runs)
	$(PYTEST) $(ARGS)

lint:  ## Check style with ruff
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:  ## Format and auto-fix with ruff
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

clean:  ## Remove run outputs and caches
	rm -rf outputs multirun wandb lightning_logs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
