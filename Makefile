# fer-service: `make run` serves with the embedded backend; `make test` runs every check.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
HOST   ?= 127.0.0.1
PORT   ?= 8000
FER2013 ?= ../shared/datasets/fer2013

.PHONY: venv run test lint format types pytest models model-compact model-derl model-sequence \
	bench clean

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

# Retrain and re-export every shipped archive exactly as model_store/MODEL_CARD.md records
# it (each step resumes; DEVICE=cuda on a GPU host, auto picks one when present). Times:
# - compact.mar 1.1: 60 + 12 epochs, then block 2 grown to 128 channels for 9 more: about
#   3 h on 2 CPU cores (1 h 55 min with native bfloat16); on one H200 about 1 s an epoch.
# - derl.mar 1.0 (needs compact.mar, its distillation teacher): stage 1 on CK+ pairs
#   8 min, stage 2 40 epochs 76 min, on 2 CPU cores; on one H200 stage 2 is 5 s an epoch.
# - sequence.mar 1.0 (needs compact.mar, its frozen backbone): 1-2 min on 1 CPU core.
# `make -n models` prints the commands.
CKPLUS ?= ../shared/datasets/ckplus/ckplus.npz
DEVICE ?= auto
TRAIN  := $(VENV)/bin/fer-train
FER_TRAIN := $(TRAIN) compact --data $(FER2013)/train.npz \
	--val $(FER2013)/public_test.npz --threads 2 --device $(DEVICE) --resume
models: model-compact model-derl model-sequence

model-compact: venv
	$(FER_TRAIN) --out runs/compact --epochs 60
	$(FER_TRAIN) --out runs/compact_ft --init runs/compact/best.pt --epochs 12 --lr 0.02
	$(FER_TRAIN) --out runs/wide128 --init runs/compact_ft/best.pt --widths 32 128 --epochs 9 \
		--lr 0.02 --warmup-epochs 0 --dropout 0.3 --augment light --label-smoothing 0.05 \
		--weight-decay 2e-4
	$(TRAIN) export runs/wide128/best.pt --name compact --version 1.1 --to model_store --fp16

model-derl: model-compact
	$(TRAIN) derl-gan --data $(CKPLUS) --out runs/derl_gan --holdout-folds 0 --epochs 50 \
		--threads 2 --device $(DEVICE) --resume
	$(TRAIN) derl --data $(FER2013)/train.npz --val $(FER2013)/public_test.npz \
		--generator runs/derl_gan/last.pt --out runs/derl3 --epochs 40 --local-width 64 \
		--local-convs 2 --local-growth 2 --distill model_store/compact.mar \
		--distill-weight 0.5 --distill-temperature 4 --augment light --label-smoothing 0.05 \
		--weight-decay 2e-4 --warmup-epochs 1 --threads 2 --device $(DEVICE) --resume
	$(TRAIN) export runs/derl3/best.pt --name derl --version 1.0 --to model_store --fp16

model-sequence: model-compact
	$(TRAIN) sequence --ckplus $(CKPLUS) --backbone model_store/compact.mar \
		--out runs/seq_cv/fold0 --holdout-folds 0 --epochs 8 --synthetic 140 --threads 1 \
		--device $(DEVICE) --resume
	$(TRAIN) export runs/seq_cv/fold0/last.pt --name sequence --version 1.0 --to model_store --fp16

bench: venv
	$(PY) -m bench.accuracy
	$(PY) -m bench.latency

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
