# gopwatch — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: lock setup demo test lint typecheck unit integration schemas kafka-jars bench train eval fuzz image clean help

help:
	@echo "make setup      create .venv and install gopwatch with its dev extras (idempotent)"
	@echo "make demo       run the live demo on an embedded broker"
	@echo "make lock       re-resolve constraints.txt to the newest versions pyproject.toml allows"
	@echo "make test       lint + type check + unit and integration tests (real Kafka)"
	@echo "make schemas    regenerate the JSON Schema files of the wire contracts"
	@echo "make bench      run the benchmarks and print their tables"
	@echo "make train      rebuild the shipped student (teacher cache, distillation, model card)"
	@echo "make eval       evaluate the student on held-out streams; writes out/eval.html"
	@echo "make fuzz       fuzz every wire parser for FUZZ_SECONDS each (default 120)"
	@echo "make image      build the worker image with podman on a debootstrapped base, then smoke-test it"

$(STAMP): pyproject.toml constraints.txt models/snapshot/dct.c
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip wheel setuptools
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@# model wheels whose own dependencies we do not want (torchvision, torchaudio, opencv-python):
	@# only their weights (rapidocr-onnxruntime: the PP-OCRv4 mobile detector of the live cascade)
	@$(PY) -m pip install -q -c constraints.txt --no-deps 'facenet-pytorch==2.6.0' 'silero-vad==6.2.3' 'rapidocr-onnxruntime==1.4.4'
	@# the stills' native DCT reader (gcc, libjpeg62-turbo-dev); without it jpeglib reads, slower
	@gcc -O2 -shared -fPIC -Wall -o models/snapshot/libgwdct.so.1 models/snapshot/dct.c -ljpeg -lm
	@touch $(STAMP)

setup: $(STAMP)

lock:
	@rm -rf .venv-lock && $(PY_SYS) -m venv .venv-lock
	@.venv-lock/bin/python -m pip install -q --upgrade pip wheel setuptools
	@.venv-lock/bin/python -m pip install -q -e '.[dev]'
	@.venv-lock/bin/python -m pip install -q --no-deps 'facenet-pytorch==2.6.0' 'silero-vad==6.2.3' 'rapidocr-onnxruntime==1.4.4'
	@{ head -2 constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.new
	@mv constraints.new constraints.txt && rm -rf .venv-lock
	@echo "constraints.txt re-resolved: run make setup and make test before committing it"

kafka-jars: $(STAMP)
	@$(VENV)/bin/gopwatch broker fetch

demo: $(STAMP)
	@$(VENV)/bin/gopwatch demo

lint: $(STAMP)
	$(VENV)/bin/ruff check schemas streaming consumers models tests bench
	$(VENV)/bin/ruff format --check schemas streaming consumers models tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(PY) -m schemas.jsonschema write

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP) kafka-jars
	$(PY) -m pytest -q tests/integration

test: $(STAMP) kafka-jars lint typecheck
	$(PY) -m pytest -q -ra tests

bench: $(STAMP)
	$(PY) bench/extract.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

train: $(STAMP)
	$(VENV)/bin/gopwatch train --out models/weights

FUZZ_SECONDS ?= 120
fuzz: $(STAMP)
	@set -o pipefail; for t in $$($(PY) -m tests.fuzz.run --list); do \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; $(PY) -m tests.fuzz.run $$t $(FUZZ_SECONDS) 2>&1 | tail -n 4 || exit 1; \
	done

eval: $(STAMP)
	$(VENV)/bin/gopwatch eval

# needs root, podman, runc and debootstrap (apt-get install podman runc debootstrap); about 10 minutes
image: $(STAMP) kafka-jars
	deploy/image.sh
