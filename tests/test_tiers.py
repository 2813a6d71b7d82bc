"""Tier selection: a fresh interpreter picks the CPU tier, says so, and switches Triton to the interpreter.

The subprocesses see no GPU (CUDA_VISIBLE_DEVICES is empty), so these tests mean the same on a GPU machine."""
import os
import subprocess
import sys

import pytest

import autograder


def run(code, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "AUTOGRADER_TIER")}
    e["CUDA_VISIBLE_DEVICES"] = ""
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


def test_cpu_tier_banner_and_interpreter():
    r = run("import autograder, os, triton; print(os.environ['TRITON_INTERPRET']);"
            "import triton.language as tl\n@triton.jit\ndef k(x): pass\nprint(type(k).__name__)")
    assert r.returncode == 0, r.stderr
    assert "[autograder] CPU tier: no CUDA device" in r.stdout
    assert "InterpretedFunction" in r.stdout and "\n1\n" in r.stdout


def test_forcing_gpu_without_cuda_is_a_clear_error():
    r = run("import autograder", AUTOGRADER_TIER="gpu")
    assert r.returncode != 0 and "no CUDA device" in r.stderr


def test_unknown_tier_is_a_clear_error():
    r = run("import autograder", AUTOGRADER_TIER="tpu")
    assert r.returncode != 0 and "AUTOGRADER_TIER must be" in r.stderr


@pytest.mark.skipif(autograder.TIER == "gpu", reason="on a GPU the benchmark runs: tests/test_gpu.py checks it")
def test_benchmark_says_it_needs_a_gpu(capsys):
    assert autograder.bench.benchmark(4, lambda *a, **k: None) == []
    assert "needs a CUDA GPU" in capsys.readouterr().out


def test_tiles_reject_unsupported_head_dims():
    from autograder.tiles import attention_tiles
    assert attention_tiles(64)["BLOCK_M"] != attention_tiles(64)["BLOCK_N"]
    with pytest.raises(ValueError, match="head_dim must be"):
        attention_tiles(48)
