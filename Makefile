# Two commands for a fresh machine: `make bench` (the main job on the demo data set) and
# `make test` (the test suite). Both create .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV ?= .venv
# The CPU build that installs offline here. A GPU cluster keeps its own CUDA torch with
# `make TORCH_SPEC= VENV_FLAGS=--system-site-packages ...` (see README).
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: bench test test-fast lint format venv clean-runs
venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(if $(TORCH_SPEC),$(PY) -m pip install --quiet "$(TORCH_SPEC)")
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/decodiff bench --config demo $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" $(ARGS)

# ruff's lint and format check (settings in pyproject.toml); CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-runs:
	rm -rf runs .cache
