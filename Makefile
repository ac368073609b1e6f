# `make demo`: set everything up, then the whole pipeline on the paper's grid world:
# collect uniform-random data, verify and show it, train CAST-BCQ, evaluate its policy.
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
	$(PY) -m pip install -q -e '.[mujoco,d4rl,algos,train,dev]'
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO)/grid.zarr $(DEMO)/grid-run
	$(VENV)/bin/madata collect grid --mix random --episodes 1000 --seed 0 -o $(DEMO)/grid.zarr
	$(VENV)/bin/madata verify $(DEMO)/grid.zarr
	$(VENV)/bin/madata info $(DEMO)/grid.zarr
	$(VENV)/bin/madata train cast-bcq $(DEMO)/grid.zarr --steps 1500 --batch-size 128 --eval-every 500 \
		--eval-episodes 1 --seed 0 -o $(DEMO)/grid-run
	$(VENV)/bin/madata eval $(DEMO)/grid-run --episodes 1

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
