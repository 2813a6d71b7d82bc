# One command each: `make run` (set up, then check every reference solution and, on a GPU,
# benchmark them) and `make test` (set up, then run the test suite). Both create .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

TORCH_VERSION  := 2.13.0
TRITON_VERSION := 3.9.0
# On Linux, PyPI's torch is the multi-GB CUDA build: a machine without a GPU takes PyTorch's CPU
# wheels instead. When that index cannot be reached (an offline mirror, a firewall), the default
# index is used, which on such machines usually serves the CPU wheel from local disk.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# GPU machines keep the CUDA torch they have (the venv sees system site-packages).
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
INSTALL_TORCH := echo "setup: installing torch (this machine's GPU build)"; $(PY) -m pip install -q torch
TEST_BANNER   := GPU tier: compiled kernels, full-size cases; about 7 min on an H100 host (16 cores)
else
# The probe fails fast where the index is unreachable; pip itself would retry every package for minutes.
INSTALL_TORCH := echo "setup: installing torch $(TORCH_VERSION) (the CPU wheel, about 200 MB) and triton $(TRITON_VERSION)"; \
	if $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; \
	then $(PY) -m pip install -q --index-url $(TORCH_CPU_INDEX) torch==$(TORCH_VERSION); \
	else echo "setup: $(TORCH_CPU_INDEX) unreachable, torch==$(TORCH_VERSION) comes from the default index"; \
	$(PY) -m pip install -q torch==$(TORCH_VERSION); fi && \
	$(PY) -m pip install -q triton==$(TRITON_VERSION)
TEST_BANNER   := CPU tier (Triton interpreter), on every core (pytest-xdist): about 20 min on 2 cores (grading end to end: the sandbox, a real Slurm and Gradescope's harness are most of it); one problem's tests: pytest -k p3, about a minute
endif

.PHONY: setup run test test-gpu build check-build clean
setup: $(VENV)/.installed

# setuptools warns on every editable install that a folder named like the package may shadow it:
# here that folder is the package itself
$(VENV)/.installed: pyproject.toml Makefile
	@echo "setup: creating $(VENV) (about 2 minutes the first time; later runs skip this)"
	python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || { $(INSTALL_TORCH); }
	@echo "setup: installing the course (autograder) with jupyter, nbgrader, jupytext, matplotlib and pytest"
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e '.[course,test]'
	touch $@

run: setup           ## check every reference solution (+ GPU benchmark table)
	$(PY) -m autograder.scoreboard

test: setup          ## the test suite on this machine's tier (CI runs this)
	@echo "make test: $(TEST_BANNER) ($(shell nproc 2>/dev/null || echo ?) cores here)"
	$(PY) -m pytest -q -n auto --dist loadgroup --no-loadscope-reorder -p no:benchmark --durations=15

test-gpu: setup      ## the GPU tier: full-size cases and benchmarks (needs CUDA)
	$(PY) -m pytest -q -m gpu

build: setup         ## regenerate notebooks/*.ipynb, release/, solutions/, then refresh stale tests/executed/ records
	$(PY) tools/build_course.py
	$(PY) tools/executed_notebooks.py
	$(PY) tools/kill_rate_records.py
	$(PY) tools/graded_reference_records.py

check-build: setup   ## fail if anything derived is stale
	$(PY) tools/build_course.py --check
	$(PY) tools/executed_notebooks.py --check
	$(PY) tools/kill_rate_records.py --check
	$(PY) tools/graded_reference_records.py --check

clean:
	rm -rf $(VENV) build
