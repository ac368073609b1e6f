# `make demo`: set everything up, then the whole pipeline on the paper's grid world:
# collect uniform-random data, verify and show it, train CAST-BCQ, evaluate its policy.
# `make test`: set everything up, run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO ?= demo-output

.PHONY: setup browser demo test lint clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare "torch" requirement could pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[mujoco,d4rl,algos,train,pettingzoo,og-marl,scale,smax,dev]'
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO)/grid.zarr $(DEMO)/grid-run
	$(VENV)/bin/madata collect grid --mix random --episodes 1000 --seed 0 -o $(DEMO)/grid.zarr
	$(VENV)/bin/madata verify $(DEMO)/grid.zarr
	$(VENV)/bin/madata info $(DEMO)/grid.zarr
	$(VENV)/bin/madata train cast-bcq $(DEMO)/grid.zarr --steps 1500 --batch-size 128 --eval-every 500 \
		--eval-episodes 1 --seed 0 -o $(DEMO)/grid-run
	$(VENV)/bin/madata eval $(DEMO)/grid-run --episodes 1

# The HTML report's browser test needs Debian's chromium: installed when missing and the
# machine allows it (root with apt-get, as in CI); otherwise a note, and the test is skipped
# (unless MADATA_REQUIRE_CHROMIUM=1, as .ci/run sets, where it fails instead).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	    echo "note: apt-get could not install chromium; its test is skipped"; \
	  else echo "note: chromium is missing and needs root to install (apt-get install chromium); its test is skipped"; fi; }

test: setup browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
