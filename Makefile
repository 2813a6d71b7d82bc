# One command each: `make run` (set up, then check every reference solution and, on a GPU,
# benchmark them) and `make test` (set up, then run the test suite). Both create .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

# CPU machines take the CPU wheels (torch 2.13.0 lies on local disk: no multi-GB CUDA download);
# GPU machines keep the CUDA torch they have (the venv sees system site-packages).
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH  := $(if $(HAS_GPU),torch,torch==2.13.0 triton==3.9.0)

.PHONY: setup run test test-gpu build check-build clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[course,test]'
	touch $@

run: setup           ## check every reference solution (+ GPU benchmark table)
	$(PY) -m autograder.scoreboard

test: setup          ## the test suite on this machine's tier (CI runs this)
	$(PY) -m pytest -q

test-gpu: setup      ## the GPU tier: full-size cases and benchmarks (needs CUDA)
	$(PY) -m pytest -q -m gpu

build: setup         ## regenerate notebooks/*.ipynb, release/ and solutions/ from notebooks/*/*.py
	$(PY) tools/build_course.py

check-build: setup   ## fail if anything derived is stale
	$(PY) tools/build_course.py --check

clean:
	rm -rf $(VENV) build
