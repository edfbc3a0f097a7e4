# ULMFiT / MultiFiT toolchain: environments, pipeline stages as file targets, demo, tests.
#
#   make demo                      run the pipeline 01-05 on the demo corpus (stdlib docstrings)
#   make test                      run the fast test suite in both environments
#   make encode CORPUS=my.txt RUN=runs/mine CORPUS_LANG=polish VOCAB=35000
#   make convert RUN=runs/mine ARCH=qrnn EPOCHS=10
#
# Every stage writes beside its target and renames at the end, so an interrupted stage leaves
# nothing that make would take as up to date; re-running does nothing when outputs are current.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables
.DEFAULT_GOAL := help

PYTHON ?= python3.11
# No TF_CPP_MIN_LOG_LEVEL export: the TF scripts quiet TensorFlow unless it is set (quiet_tf.py).
VENV_FASTAI ?= .venv-fastai
VENV_TF ?= .venv-tf
FASTAI_PY := $(VENV_FASTAI)/bin/python
TF_PY := $(VENV_TF)/bin/python
FASTAI_ENV := $(VENV_FASTAI)/.installed
TF_ENV := $(VENV_TF)/.installed

# ---- pipeline variables -------------------------------------------------------------------
RUN ?= runs/demo
DEMO_CORPUS := $(RUN)/demo_raw.txt
CORPUS ?= $(DEMO_CORPUS)
# LANG is the shell's locale variable; `make LANG=polish` is still accepted and taken as the
# corpus language, while the stages keep a UTF-8 locale.
ifeq ($(origin LANG),command line)
CORPUS_LANG := $(LANG)
override LANG := C.UTF-8
endif
CORPUS_LANG ?= english
CLEANUP_FLAGS ?=
VOCAB ?= 4000
MODEL_TYPE ?= unigram
SPM_NAME ?= spm
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
FORMATS ?= bin id

# 5000 -> sp5k, 35000 -> sp35k; other sizes keep their exact number (as stage 02 names them).
SPM_SUFFIX := $(if $(filter 0,$(shell expr $(VOCAB) % 1000)),sp$(shell expr $(VOCAB) / 1000)k,sp$(VOCAB))
SENTENCES := $(RUN)/sentences.txt
SPM_MODEL := $(RUN)/spm/$(SPM_NAME)-$(SPM_SUFFIX).model
IDS := $(RUN)/ids.txt
PIECES := $(RUN)/pieces.txt
BIN_META := $(RUN)/corpus/meta.json
ENCODED := $(if $(filter bin,$(FORMATS)),$(BIN_META)) $(if $(filter id,$(FORMATS)),$(IDS)) \
           $(if $(filter piece,$(FORMATS)),$(PIECES))

# stage 04: training (sizes default to the architecture's: 400 / 3x1152 LSTM / 4x1552 QRNN)
ARCH ?= awd-lstm
EXP ?= lm-$(ARCH)
EPOCHS ?= 1
BATCH_SIZE ?= 64
BPTT ?= 70
MODEL_FLAGS ?=
TRAIN_FLAGS ?=
LM_PTH := $(RUN)/lm/$(EXP).pth

# stage 05: conversion (FIXED_SEQ_LEN empty: a SavedModel for any sequence length)
FIXED_SEQ_LEN ?=
EXPORT_DIR := $(RUN)/export/$(EXP)
EXPORT := $(EXPORT_DIR)/config.json

# The demo trains a small model, so that CPU training takes a few minutes.
# A higher LR and less dropout than the full-size recipe suit a tiny model on 1 MB of text.
DEMO_MODEL_FLAGS := --emb-size 64 --hidden-size 256 --num-hidden-layers 2
DEMO_TRAIN_FLAGS := --seed 0 --pretrain-lr 1e-2 --drop-mult 0.3
DEMO_BATCH_SIZE := 32
DEMO_EPOCHS := 3

# downstream demo: fine-tune a classifier on a labelled TSV from the demo's (or RUN's) export
DATA ?= ../shared/data/sent200.tsv
LABELS ?= ../shared/data/document_classification_labels.txt
DATA_COLUMN ?= sentence
GOLD_COLUMN ?= sentiment
CLS_FLAGS ?= --head attention --num-epochs 3 --lr 5e-3
# stage 08: the same data through fastai's recipe, converted by stage 05 into a task directory
FASTAI_CLS_DIR := $(RUN)/fastai_classifier
FASTAI_CLS_FLAGS ?= --num-epochs 4 --lr 2e-2

# stage 14: serve a stage-13 export (JSON API and a page); by default what export-task wrote
EXPORT_TASK ?= $(TASK_EXPORT)
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 8080
SERVE_FLAGS ?=

PYTEST_ARGS ?=
# The page test drives Debian's Chromium (tests/tf/test_serve.py); ULMFIT_SKIP_BROWSER=1 skips both.
BROWSER_BINARIES := /usr/bin/chromium /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help env env-fastai env-tf cleanup spm encode train convert demo demo-classifier demo-fastai-classifier export-task serve browser-deps test test-all bench gpu-check clean distclean

help:
	@echo "make demo       run stages 01-03 on the demo corpus (creates the environments if missing)"
	@echo "make demo-classifier DATA=file.tsv   fine-tune a classifier on the demo export, export it"
	@echo "make demo-fastai-classifier DATA=file.tsv   the same in fastai (stage 08), convert, export"
	@echo "make export-task TASK=dir   stage 13: SavedModel, TFLite, int8 TFLite, ONNX in TASK_export"
	@echo "make serve EXPORT_TASK=dir   serve a stage-13 export on http://$(SERVE_HOST):$(SERVE_PORT)/"
	@echo "make test       fast test suite in both environments (make test-all: slow tests too)"
	@echo "make browser-deps   Chromium and its driver for the page test (apt-get; make test runs it)"
	@echo "make cleanup | spm | encode | train | convert   one stage and what it needs; variables:"
	@echo "    RUN=$(RUN) CORPUS=$(CORPUS) CORPUS_LANG=$(CORPUS_LANG) VOCAB=$(VOCAB)"
	@echo "    MODEL_TYPE=$(MODEL_TYPE) FORMATS='$(FORMATS)' WORKERS=$(WORKERS) CLEANUP_FLAGS='$(CLEANUP_FLAGS)'"
	@echo "    ARCH=$(ARCH) EXP=$(EXP) EPOCHS=$(EPOCHS) BATCH_SIZE=$(BATCH_SIZE) BPTT=$(BPTT)"
	@echo "    MODEL_FLAGS='$(MODEL_FLAGS)' TRAIN_FLAGS='$(TRAIN_FLAGS)' FIXED_SEQ_LEN=$(FIXED_SEQ_LEN)"
	@echo "make env       both virtual environments ($(VENV_FASTAI), $(VENV_TF))"
	@echo "make bench     benchmarks (printed ratios)"
	@echo "make gpu-check the CUDA paths on a GPU machine, one table (GPU_CHECK_FLAGS=--quick)"
	@echo "make print-VAR show a variable, e.g. make print-SPM_MODEL VOCAB=35000"

# ---- environments: a venv per side, the project installed into it editable ------------------
# `pip install -e '.[fastai,test]'` / `-e '.[tf,test]'`: pyproject.toml's extras are the pins of
# requirements-fastai.txt / requirements-tf.txt (and requirements-test.txt); the project's packages
# are imported as an installed distribution, the checkout is not on sys.path. A venv is built from
# scratch when its requirements change (it keeps a copy to tell); when only pyproject.toml or the
# set of top-level packages changes, the project is reinstalled in place (seconds): an editable
# install knows its top-level packages by name, so a new package is importable after that.
# PACKAGES: the names of [tool.setuptools.packages.find] in pyproject.toml; keep them in step.
PACKAGES := ulmfit_core pretraining_utils ulmfit_torch lm_training convert evaluation \
    ulmfit_keras ulmfit_tasks task_export serving
PRESENT_PACKAGES := $(wildcard $(PACKAGES))
venv_packages = $(strip $(if $(wildcard $(1)/.packages),$(file <$(1)/.packages)))
# FORCE when the packages in the checkout differ from those venv $(1) was installed with
packages_changed = $(if $(filter-out $(PRESENT_PACKAGES),$(call venv_packages,$(1)))$(filter-out \
    $(call venv_packages,$(1)),$(PRESENT_PACKAGES)),FORCE)
FASTAI_REQS := requirements-fastai.txt requirements-test.txt
TF_REQS := requirements-tf.txt requirements-test.txt

# $(1) venv, $(2) its requirement files, $(3) its extra (the `test` extra comes with both)
define make_venv
	if ! cat $(2) | cmp -s - $(1)/.requirements; then rm -rf $(1) && $(PYTHON) -m venv $(1); fi
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[$(3),test]'
	cat $(2) > $(1)/.requirements
	echo $(PRESENT_PACKAGES) > $(1)/.packages
	touch $(1)/.installed
endef

$(FASTAI_ENV): $(FASTAI_REQS) pyproject.toml $(call packages_changed,$(VENV_FASTAI))
	$(call make_venv,$(VENV_FASTAI),$(FASTAI_REQS),fastai)

$(TF_ENV): $(TF_REQS) pyproject.toml $(call packages_changed,$(VENV_TF))
	$(call make_venv,$(VENV_TF),$(TF_REQS),tf)

.PHONY: FORCE
FORCE:

env-fastai: $(FASTAI_ENV)
env-tf: $(TF_ENV)
env: env-fastai env-tf

# ---- pipeline -------------------------------------------------------------------------------
$(DEMO_CORPUS): | $(FASTAI_ENV)
	$(FASTAI_PY) scripts/00_demo_corpus.py --out-path $@

$(SENTENCES): $(CORPUS) | $(FASTAI_ENV)
	$(FASTAI_PY) scripts/01_cleanup.py --input-text $(CORPUS) --out-path $@ \
	    --lang $(CORPUS_LANG) --workers $(WORKERS) $(CLEANUP_FLAGS)

$(SPM_MODEL): $(SENTENCES) | $(FASTAI_ENV)
	$(FASTAI_PY) scripts/02_build_spm.py --corpus-path $< --vocab-size $(VOCAB) \
	    --model-prefix $(RUN)/spm/$(SPM_NAME) --model-type $(MODEL_TYPE) --num-threads $(WORKERS)

$(BIN_META): $(SENTENCES) $(SPM_MODEL) | $(FASTAI_ENV)
	$(FASTAI_PY) scripts/03_encode_spm.py --corpus-path $(SENTENCES) --model-path $(SPM_MODEL) \
	    --output-format bin --save-path $(@D) --workers $(WORKERS)

$(IDS) $(PIECES): $(RUN)/%s.txt: $(SENTENCES) $(SPM_MODEL) | $(FASTAI_ENV)
	$(FASTAI_PY) scripts/03_encode_spm.py --corpus-path $(SENTENCES) --model-path $(SPM_MODEL) \
	    --output-format $* --save-path $@ --workers $(WORKERS)

# Training reads the binary corpus; without a validation corpus it holds out 5% of the lines.
# --resume: an interrupted `make train` continues from its last epoch checkpoint.
$(LM_PTH): $(BIN_META) | $(FASTAI_ENV)
	$(FASTAI_PY) scripts/04_train_lm.py --pretokenized-train $(<D) --save-path $(@D) \
	    --exp-name $(EXP) --arch $(ARCH) --num-epochs $(EPOCHS) --batch-size $(BATCH_SIZE) \
	    --max-seq-len $(BPTT) --resume $(MODEL_FLAGS) $(TRAIN_FLAGS)

# --overwrite: a retrained model replaces its export (the new one is complete before the swap).
$(EXPORT): $(LM_PTH) $(SPM_MODEL) | $(TF_ENV)
	$(TF_PY) scripts/05_convert.py --pretrained-model $(LM_PTH) --spm-model-file $(SPM_MODEL) \
	    --out-path $(EXPORT_DIR) --overwrite $(if $(FIXED_SEQ_LEN),--fixed-seq-len $(FIXED_SEQ_LEN))

cleanup: $(SENTENCES)
spm: $(SPM_MODEL)
encode: $(ENCODED)
train: $(LM_PTH)
convert: $(EXPORT)

# Stages 01-05 with the demo's small model (a plain `make convert` trains the full-size one).
DEMO_CONVERT = $(MAKE) --no-print-directory convert RUN=$(RUN) EPOCHS=$(DEMO_EPOCHS) \
    BATCH_SIZE=$(DEMO_BATCH_SIZE) MODEL_FLAGS="$(DEMO_MODEL_FLAGS)" TRAIN_FLAGS="$(DEMO_TRAIN_FLAGS)"

demo:
	@$(DEMO_CONVERT)
	@echo
	@echo "== demo run in $(RUN): stages 01-05 done =="
	@for f in $(CORPUS) $(SENTENCES) $(SPM_MODEL) $(ENCODED) $(LM_PTH) $(EXPORT_DIR); do \
	    printf '  %-44s %s\n' "$$f" "$$(du -sh "$$f" | cut -f1)"; done
	@echo "  perplexity per epoch:"; sed 's/^/    /' $(RUN)/lm/$(EXP).history.csv
	$(TF_PY) scripts/07_try_export.py --export-dir $(EXPORT_DIR) \
	    --sentence "Return the number of items in a container."

# Trains the demo LM first if needed (make demo); prints validation accuracy and the heatmap path.
demo-classifier: | $(TF_ENV)
	@[ -f $(EXPORT) ] || $(DEMO_CONVERT)
	$(TF_PY) scripts/10_train_classifier.py --train-tsv $(DATA) --label-map $(LABELS) \
	    --data-column-name $(DATA_COLUMN) --gold-column-name $(GOLD_COLUMN) \
	    --model-weights-cp $(EXPORT_DIR) --out-path $(RUN)/classifier $(CLS_FLAGS)
	$(MAKE) export-task TASK=$(RUN)/classifier TEST_TSV=$(DATA)

# Stage 08 in fastai from the demo LM (trained first if missing), stage 05 into a task dir, stage 13.
demo-fastai-classifier: | $(FASTAI_ENV) $(TF_ENV)
	@[ -f $(EXPORT) ] || $(DEMO_CONVERT)
	$(FASTAI_PY) scripts/08_train_classifier.py --train-tsv $(DATA) --label-map $(LABELS) \
	    --data-column-name $(DATA_COLUMN) --gold-column-name $(GOLD_COLUMN) \
	    --spm-model-file $(SPM_MODEL) --pretrained-model $(LM_PTH) --save-path $(FASTAI_CLS_DIR) \
	    --exp-name classifier --resume $(FASTAI_CLS_FLAGS)
	$(TF_PY) scripts/05_convert.py --pretrained-model $(FASTAI_CLS_DIR)/classifier.pth \
	    --spm-model-file $(SPM_MODEL) --out-path $(FASTAI_CLS_DIR)/task --overwrite
	$(MAKE) export-task TASK=$(FASTAI_CLS_DIR)/task TEST_TSV=$(DATA)

# Stage 13: TASK (a stage 10/11/12 output dir) -> TASK_EXPORT (SavedModel, TFLite, int8, ONNX);
# validation texts from TEST_TSV, or for a tagger TEST_JSONL (stage 12's format, with gold tags)
TASK ?= $(RUN)/classifier
TASK_EXPORT ?= $(TASK)_export
TEST_TSV ?=
TEST_JSONL ?=
EXPORT_FLAGS ?=
export-task: | $(TF_ENV)
	$(TF_PY) scripts/13_export_task.py --task-dir $(TASK) --out-path $(TASK_EXPORT) \
	    $(if $(TEST_TSV),--test-tsv $(TEST_TSV) --data-column-name $(DATA_COLUMN) \
	    --gold-column-name $(GOLD_COLUMN)) $(if $(TEST_JSONL),--test-jsonl $(TEST_JSONL)) \
	    $(EXPORT_FLAGS)

# The JSON API and the page over EXPORT_TASK until Ctrl-C; SERVE_FLAGS e.g. '--max-batch 64 -v'.
serve: $(TF_ENV)
	$(TF_PY) scripts/14_serve.py --export-dir $(EXPORT_TASK) --host $(SERVE_HOST) \
	    --port $(SERVE_PORT) $(SERVE_FLAGS)

# ---- tests and benchmarks -------------------------------------------------------------------
# Installs Debian's chromium and chromium-driver when one is missing; silent when both are there.
browser-deps:
	@if [ "$${ULMFIT_SKIP_BROWSER:-}" = 1 ]; then exit 0; fi; \
	missing=; for f in $(BROWSER_BINARIES); do [ -x "$$f" ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	    if ! command -v apt-get >/dev/null; then \
	        echo "error:$$missing not found and apt-get is not available: install Chromium and" \
	             "its driver so that$$missing exist, or set ULMFIT_SKIP_BROWSER=1" >&2; exit 1; fi; \
	    if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	        echo "error:$$missing not found; run as root or install sudo to apt-get them" >&2; \
	        exit 1; fi; \
	    echo "installing chromium and chromium-driver with apt-get (missing:$$missing)"; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: $(FASTAI_ENV) $(TF_ENV) browser-deps
	$(FASTAI_PY) -m pytest tests/fastai $(PYTEST_ARGS)
	$(TF_PY) -m pytest tests/tf $(PYTEST_ARGS)

test-all: PYTEST_ARGS += -m "slow or not slow"
test-all: test

bench: $(FASTAI_ENV) $(TF_ENV)
	$(FASTAI_PY) -m benchmarks.bench_encode
	$(FASTAI_PY) -m benchmarks.bench_qrnn
	$(FASTAI_PY) -m benchmarks.bench_loader
	$(TF_PY) -m benchmarks.bench_keras_qrnn
	$(TF_PY) -m benchmarks.bench_convert
	$(TF_PY) -m benchmarks.bench_serve
	$(TF_PY) -m benchmarks.bench_finetune

# Needs a CUDA machine (else it says so and exits 0); the TF-env part runs in a subprocess, and
# the rows of both come back in one table. Exit status 1 when a parity or training check fails.
gpu-check: GPU_CHECK_FLAGS ?=
gpu-check: $(FASTAI_ENV) $(TF_ENV)
	$(FASTAI_PY) -m benchmarks.gpu_check --tf-python $(TF_PY) $(GPU_CHECK_FLAGS)

# `make print-SPM_MODEL VOCAB=35000` shows where a variable points.
print-%:
	@echo '$($*)'

clean:
	rm -rf runs

distclean: clean
	rm -rf $(VENV_FASTAI) $(VENV_TF)
