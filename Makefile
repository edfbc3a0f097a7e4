# ULMFiT / MultiFiT toolchain: environments, pipeline stages as file targets, demo, tests.
#
#   make demo                      run the pipeline on the demo corpus (stdlib docstrings)
#   make test                      run the fast test suite in both environments
#   make encode CORPUS=my.txt RUN=runs/mine CORPUS_LANG=polish VOCAB=35000
#
# Every stage writes beside its target and renames at the end, so an interrupted stage leaves
# nothing that make would take as up to date; re-running does nothing when outputs are current.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables
.DEFAULT_GOAL := help

PYTHON ?= python3.11
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

PYTEST_ARGS ?=

.PHONY: help env env-fastai env-tf cleanup spm encode demo test test-all bench clean distclean

help:
	@echo "make demo       run stages 01-03 on the demo corpus (creates the environments if missing)"
	@echo "make test       fast test suite in both environments (make test-all: slow tests too)"
	@echo "make cleanup | spm | encode   one stage and what it needs; variables:"
	@echo "    RUN=$(RUN) CORPUS=$(CORPUS) CORPUS_LANG=$(CORPUS_LANG) VOCAB=$(VOCAB)"
	@echo "    MODEL_TYPE=$(MODEL_TYPE) FORMATS='$(FORMATS)' WORKERS=$(WORKERS) CLEANUP_FLAGS='$(CLEANUP_FLAGS)'"
	@echo "make env       both virtual environments ($(VENV_FASTAI), $(VENV_TF))"
	@echo "make bench     benchmarks (printed ratios)"
	@echo "make print-VAR show a variable, e.g. make print-SPM_MODEL VOCAB=35000"

# ---- environments: a stamp file per venv, rebuilt when its requirements change --------------
# The repo root goes on the venv's path through a .pth file, so scripts and tests import the
# project's packages without an install step.
define make_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check -r $(2)
	$(1)/bin/python -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "ulmfit_toolchain.pth").write_text("$(CURDIR)\n")'
	touch $(1)/.installed
endef

$(FASTAI_ENV): requirements-fastai.txt
	$(call make_venv,$(VENV_FASTAI),$<)

$(TF_ENV): requirements-tf.txt
	$(call make_venv,$(VENV_TF),$<)

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

cleanup: $(SENTENCES)
spm: $(SPM_MODEL)
encode: $(ENCODED)

demo: encode
	@echo
	@echo "== demo run in $(RUN): stages 01-03 done =="
	@for f in $(CORPUS) $(SENTENCES) $(SPM_MODEL) $(ENCODED); do \
	    printf '  %-40s %s\n' "$$f" "$$(du -h "$$f" | cut -f1)"; done
	@echo "  first sentences:"; head -n 3 $(SENTENCES) | sed 's/^/    /'
	@if [ -f $(IDS) ]; then echo "  their ids:"; head -n 3 $(IDS) | cut -c1-100 | sed 's/^/    /'; fi

# ---- tests and benchmarks -------------------------------------------------------------------
test: $(FASTAI_ENV) $(TF_ENV)
	$(FASTAI_PY) -m pytest tests/fastai $(PYTEST_ARGS)
	$(TF_PY) -m pytest tests/tf $(PYTEST_ARGS)

test-all: PYTEST_ARGS += -m "slow or not slow"
test-all: test

bench: $(FASTAI_ENV)
	$(FASTAI_PY) benchmarks/bench_encode.py

# `make print-SPM_MODEL VOCAB=35000` shows where a variable points.
print-%:
	@echo '$($*)'

clean:
	rm -rf runs

distclean: clean
	rm -rf $(VENV_FASTAI) $(VENV_TF)
