#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (built by
# `python tools/grade.py gradescope`; see docs/instructor.md, "Grading on Gradescope").
# It makes a virtual environment with the CPU tier (torch @TORCH_VERSION@ CPU, triton @TRITON_VERSION@)
# and the course package with its `course` extra, from this zip's own copy. Nothing else of the system
# Python is touched. Settings (environment): GRADESCOPE_VENV, the environment to make
# (default /opt/fa-course-venv); GRADESCOPE_PYTHON, the Python to make it with (default python3,
# installed with apt-get when it is missing, older than 3.10 or without venv); TORCH_CPU_INDEX.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${GRADESCOPE_VENV:-/opt/fa-course-venv}"
PYTHON="${GRADESCOPE_PYTHON:-python3}"
TORCH_VERSION="@TORCH_VERSION@"
TRITON_VERSION="@TRITON_VERSION@"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

version_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; }
# Gradescope's image (GRADESCOPE_PYTHON unset, root): what is missing comes from apt-get
may_apt() { [ -z "${GRADESCOPE_PYTHON:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_python() {
    echo "setup: installing python3, python3-venv and python3-pip with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
}
if ! version_ok "$PYTHON" && may_apt; then apt_python; fi
version_ok "$PYTHON" || { echo "setup: $PYTHON is missing or older than 3.10 (use an Ubuntu 22.04 or newer base image, or set GRADESCOPE_PYTHON)" >&2; exit 1; }
if ! "$PYTHON" -m venv "$VENV"; then     # Debian and Ubuntu ship venv's pip in python3-venv
    rm -rf "$VENV"
    may_apt && apt_python && "$PYTHON" -m venv "$VENV" || { echo "setup: $PYTHON cannot make a virtual environment" >&2; exit 1; }
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# PyPI's Linux torch is the multi-GB CUDA build: the CPU wheel, from PyTorch's index when it answers,
# else from the default index (as the Makefile does; pip would otherwise retry for minutes)
if "$PY" -c "import urllib.request as u; u.urlopen('$TORCH_CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
    "$PY" -m pip install -q --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION"
else
    echo "setup: $TORCH_CPU_INDEX unreachable, torch==$TORCH_VERSION comes from the default index"
    "$PY" -m pip install -q "torch==$TORCH_VERSION"
fi
"$PY" -m pip install -q "triton==$TRITON_VERSION"
"$PY" -m pip install -q -e "$SRC[course]"
"$PY" -c "import torch, triton, nbgrader, nbclient, ipykernel; print('setup: torch', torch.__version__, 'triton', triton.__version__)"
echo "setup: done ($VENV)"
