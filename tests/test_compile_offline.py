"""The backward kernels compile for real GPUs, checked without one.

The CPU tier runs kernels in Triton's interpreter, which accepts code the compiler rejects (and never
looks at shared memory). GPU time is scarce, so this compiles the reference kernels of Problems 8 and 9
ahead of time, in a subprocess with the interpreter off: for an H100 (sm_90, bf16, the Hopper tiles) and
for a T4 (sm_75, fp16, the T4 tiles, 64 KiB of shared memory per block)."""
import subprocess
import sys
from pathlib import Path

import pytest

import autograder

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(autograder.TIER != "cpu", reason="the GPU tier compiles them for real")]

_SCRIPT = r'''
import importlib, os, sys
os.environ["TRITON_INTERPRET"] = "0"    # triton.language's own @jit helpers (tl.cdiv ...) must be compiler
import triton                           # functions: Triton 3.9's front end asserts it. So triton comes first,
import triton.language                  # then autograder, which picks the CPU tier and sets
import autograder                       # TRITON_INTERPRET=1 ...
os.environ["TRITON_INTERPRET"] = "0"    # ... which the solution modules must not see
from triton.backends.compiler import GPUTarget

slug, cap, dtype, bm1, bn1, bm2, bn2, warps, stages = sys.argv[1:]
m = importlib.import_module(f"solutions.{slug}")
target = GPUTarget("cuda", int(cap), 32)
elem = "*" + dtype
ptrs = {n: elem for n in ("Q_ptr", "K_ptr", "V_ptr", "O_ptr", "DO_ptr", "DK_ptr", "DV_ptr", "DQ_ptr")}
ptrs.update({n: "*fp32" for n in ("LSE_ptr", "Delta_ptr", "Sink_ptr", "DSink_ptr", "WDK_ptr", "WDV_ptr", "SDK_ptr", "SDV_ptr")})
p9 = slug.startswith("p9")
sinks = {"HAS_SINK_LOGITS": True} if p9 else {}
sink_block = {"SINK_BLOCK": 16} if p9 else {}          # the sink phase's narrow key block

def build(fn, constexprs):
    sig = {n: "constexpr" if n in constexprs else ptrs.get(n, "fp32" if "scale" in n else "i32")
           for n in fn.arg_names}
    k = triton.compile(triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=target,
                       options=dict(num_warps=int(warps), num_stages=int(stages)))
    limit = 64 * 1024 if int(cap) < 80 else 227 * 1024
    assert k.metadata.shared <= limit, (fn.__name__, k.metadata.shared, limit)

for causal in ((True, False) if int(cap) >= 80 else (True,)):   # the T4: the causal path is enough
    base = dict(IS_CAUSAL=causal, HEAD_DIM=64 if int(cap) < 80 else 128, GROUP=2)
    build(m._attn_fwd, dict(base, BLOCK_M=64, BLOCK_N=64, **sinks))
    build(m._attn_bwd_dkdv, dict(base, BLOCK_M=int(bm1), BLOCK_N=int(bn1), **sink_block))
    build(m._attn_bwd_dq, dict(base, BLOCK_M=int(bm2), BLOCK_N=int(bn2), **sink_block))
build(m._attn_bwd_delta, dict(HEAD_DIM=128, BLOCK_M=int(bm2), **sinks))
if p9:
    build(m._attn_bwd_sink_sum, dict(HEAD_DIM=128, BLOCK_N=int(bn1), ROWS=16, BLOCK_C=4, **sink_block))
print("compiled")
'''


@pytest.mark.parametrize("slug", ["p8_backward_gqa", "p9_backward_window_sinks"])
@pytest.mark.parametrize("gpu", [
    ("90", "bf16", 64, 128, 128, 64, 8, 3),   # autograder.tiles.backward_tiles on Hopper, D = 128
    ("75", "fp16", 16, 64, 64, 16, 4, 1),     # ... on a T4
], ids=["sm90", "sm75"])
def test_backward_kernels_compile_for_gpus(slug, gpu):
    if not (REPO / "solutions" / f"{slug}.py").exists():
        pytest.skip(f"solutions/{slug}.py is not built")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, slug, *map(str, gpu)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
