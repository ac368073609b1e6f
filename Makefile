# `make demo`: set everything up, collect a small dataset, show it.
# `make test`: set everything up, run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO ?= demo-output

.PHONY: setup demo test lint clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare "torch" requirement could pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[mujoco,d4rl,algos,dev]'
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO)/grid.zarr
	$(VENV)/bin/madata collect grid --mix random --episodes 1000 --seed 0 -o $(DEMO)/grid.zarr
	$(VENV)/bin/madata verify $(DEMO)/grid.zarr
	$(VENV)/bin/madata info $(DEMO)/grid.zarr

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
