# fer-service: `make run` serves with the embedded backend; `make test` runs every check.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
HOST   ?= 127.0.0.1
PORT   ?= 8000
FER2013 ?= ../shared/datasets/fer2013

.PHONY: venv run test lint format types pytest models bench clean

# Idempotent: re-runs only when pyproject.toml changes. torch is installed first and pinned,
# so pip takes the CPU wheel from local disk instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[train,dev]' $(TORCH)
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(VENV)/bin/fer-service serve --host $(HOST) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

types: venv
	$(VENV)/bin/mypy service training

pytest: venv
	$(VENV)/bin/pytest -q

test: lint types pytest

# Retrain and re-export the shipped classifier (about an hour on 2 CPU cores).
models: venv
	$(VENV)/bin/fer-train compact --data $(FER2013)/train.npz --val $(FER2013)/public_test.npz \
		--out runs/compact --resume
	$(VENV)/bin/fer-train export runs/compact/best.pt --name compact --version 1.0 --to model_store

bench: venv
	$(PY) -m bench.accuracy
	$(PY) -m bench.latency

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
