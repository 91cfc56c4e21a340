# mnistlab developer tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
# Extra flags for `python -m venv`, e.g. VENV_FLAGS=--system-site-packages to reuse a torch
# that the base interpreter already has.
VENV_FLAGS ?=
# The torch installed when the venv has none that satisfies pyproject's range.
TORCH_PIN ?= torch==2.13.0
# Test processes for `make test` (pytest-xdist, files shared out whole; 0 = this process).
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mnistlab-installed

.PHONY: help venv demo test lint bench clean

help:  ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/ensure_torch.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) scripts/ensure_torch.py --pin "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

venv: $(STAMP)  ## Create or update .venv with mnistlab and its dev tools.

demo: $(STAMP)  ## Fetch MNIST (honours MNISTLAB_MIRRORS), explore it, train the default model.
	$(PY) -m mnistlab data fetch mnist
	$(PY) -m mnistlab data show mnist --out demo/mnist --overwrite
	$(PY) -m mnistlab train --out demo/run --overwrite

test: $(STAMP)  ## Lint, then the whole suite (installs Chromium and PostgreSQL for their tests).
	$(PY) -m ruff check src tests benchmarks scripts
	bash scripts/install_browser.sh
	bash scripts/install_postgres.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)  ## ruff check.
	$(PY) -m ruff check src tests benchmarks scripts

bench: $(STAMP)  ## All benchmarks (installs Keras and scikit-learn's peers for the load one).
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) benchmarks/load_benchmark.py
	$(PY) benchmarks/classic_benchmark.py --logreg --table --datasets mnist fashion-mnist
	$(PY) benchmarks/augment_benchmark.py

clean:  ## Remove the venv and build artefacts (never the dataset cache).
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache demo
