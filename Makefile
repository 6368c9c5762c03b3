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

# Retrain and re-export the shipped classifier, as model_store/MODEL_CARD.md records it:
# 60 epochs, a 12-epoch warm restart, then block 2 grown to 128 channels and fine-tuned
# (hours on 2 CPU cores; every step resumes).
FER_TRAIN := $(VENV)/bin/fer-train compact --data $(FER2013)/train.npz \
	--val $(FER2013)/public_test.npz --threads 2 --resume
models: venv
	$(FER_TRAIN) --out runs/compact --epochs 60
	$(FER_TRAIN) --out runs/compact_ft --init runs/compact/best.pt --epochs 12 --lr 0.02
	$(FER_TRAIN) --out runs/wide128 --init runs/compact_ft/best.pt --widths 32 128 --epochs 9 \
		--lr 0.02 --warmup-epochs 0 --dropout 0.3 --augment light --label-smoothing 0.05 \
		--weight-decay 2e-4
	$(VENV)/bin/fer-train export runs/wide128/best.pt --name compact --version 1.1 \
		--to model_store --fp16

bench: venv
	$(PY) -m bench.accuracy
	$(PY) -m bench.latency

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
