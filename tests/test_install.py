"""`make setup` installs the right torch: PyTorch's CPU wheels without a GPU, the machine's CUDA torch with one.

The Makefile's recipe runs for real, with a stand-in `python3` on PATH: it creates the venv's `python`
(the same stand-in), logs every pip command instead of installing, says torch is missing, and runs
everything else (the reachability probe of the CPU index) with the real interpreter. The index is a
local HTTP server (reachable) or a closed port (unreachable); `nvidia-smi` is a stub or absent.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="needs make")

CPU_INDEX = "https://download.pytorch.org/whl/cpu"

FAKE_PYTHON = f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
if args[:2] == ["-m", "venv"]:
    bin_dir = os.path.join(args[-1], "bin")
    os.makedirs(bin_dir, exist_ok=True)
    os.link(__file__, os.path.join(bin_dir, "python"))
    sys.exit(0)
if args[:2] == ["-m", "pip"]:
    with open(os.environ["FAKE_PIP_LOG"], "a") as log:
        log.write(" ".join(args[2:]) + "\\n")
    sys.exit(0)
if args[:1] == ["-c"] and args[1].strip() == "import torch":
    sys.exit(1)
os.execv({sys.executable!r}, [{sys.executable!r}] + args)
"""


def _tool_dirs(tmp_path):
    """A PATH with the tools make's recipes use (sh, nproc, touch...) but no nvidia-smi."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("sh", "bash", "env", "nproc", "touch", "echo", "rm", "cat"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "python3").write_text(FAKE_PYTHON)
    (fake / "python3").chmod(0o755)
    return fake, tools


def _setup(tmp_path, gpu=False, index=None):
    """Run `make setup` into a fresh venv under tmp_path; return (make's output, the pip commands run)."""
    fake, tools = _tool_dirs(tmp_path)
    if gpu:
        (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
        (fake / "nvidia-smi").chmod(0o755)
    log = tmp_path / "pip.log"
    args = [MAKE, "-C", str(REPO), "setup", f"VENV={tmp_path / 'venv'}"]
    if index:
        args.append(f"TORCH_CPU_INDEX={index}")
    env = {"PATH": f"{fake}{os.pathsep}{tools}", "FAKE_PIP_LOG": str(log), "HOME": str(tmp_path)}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr, log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def local_index(tmp_path):
    """A reachable CPU index: an HTTP server whose /torch/ page exists."""
    root = tmp_path / "index"
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "index.html").write_text("<html></html>")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"       # nothing listens there any more: connection refused


def _torch_installs(pip_commands):
    return [c for c in pip_commands if re.search(r"(^| )torch(==|$| )", c)]


def test_dry_run_without_gpu_names_the_cpu_index(tmp_path):
    fake, tools = _tool_dirs(tmp_path)
    r = subprocess.run([MAKE, "-n", "-C", str(REPO), "setup", f"VENV={tmp_path / 'venv'}"],
                       capture_output=True, text=True, env={"PATH": f"{fake}{os.pathsep}{tools}"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"pip install -q --index-url {CPU_INDEX} torch==2.13.0" in r.stdout


def test_cpu_machine_installs_torch_from_the_cpu_index(tmp_path, local_index):
    out, pip = _setup(tmp_path, index=local_index)
    assert _torch_installs(pip) == [f"install -q --index-url {local_index} torch==2.13.0"], pip
    assert "install -q triton==3.9.0" in pip
    assert pip[-1] == "install -q -e .[course,test]"
    assert "unreachable" not in out, out
    # no silent minutes: each long step says what it installs
    assert "setup: installing torch 2.13.0 (the CPU wheel" in out and "setup: installing the course" in out, out


def test_unreachable_cpu_index_falls_back_to_the_default_index(tmp_path):
    index = _closed_port_url()
    out, pip = _setup(tmp_path, index=index)
    assert _torch_installs(pip) == ["install -q torch==2.13.0"], pip
    assert "install -q triton==3.9.0" in pip
    assert f"setup: {index} unreachable, torch==2.13.0 comes from the default index" in out.splitlines()


def test_gpu_machine_keeps_its_cuda_torch(tmp_path, local_index):
    _, pip = _setup(tmp_path, gpu=True, index=local_index)
    assert _torch_installs(pip) == ["install -q torch"], pip
    assert not any("--index-url" in c or "triton==" in c for c in pip), pip


def test_environment_yml_takes_the_cpu_wheel_of_the_makefile_version():
    makefile = (REPO / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION\s*:=\s*(\S+)", makefile, re.M).group(1)
    triton = re.search(r"^TRITON_VERSION\s*:=\s*(\S+)", makefile, re.M).group(1)
    yml = (REPO / "environment.yml").read_text()
    pip_lines = [shlex.split(ln.strip()[2:]) for ln in yml.splitlines() if ln.strip().startswith("- ")]
    flat = [w for words in pip_lines for w in words]
    assert CPU_INDEX in flat and flat[flat.index(CPU_INDEX) - 1] == "--extra-index-url"
    assert f"torch=={version}+cpu" in flat and f"triton=={triton}" in flat
    assert not re.search(r"^\s*- pytorch", yml, re.M), "conda's pytorch would shadow the pinned CPU wheel"
