"""Preflight: what this machine runs the course with, and the combinations known to break.

The second cell of every notebook calls `preflight()`. It prints one block (tier, device, dtype,
versions) and a WARNING line per known-bad combination, each saying what to do, and returns the
same facts as a dict, so a student can paste it into a question and a test can assert on it.
"""
from __future__ import annotations

import os
import platform
import sys

import torch

from .. import device

MIN_TRITON = (3, 2)


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _kernels_by_mode() -> tuple[list[str], list[str]]:
    """(compiled, interpreted) names of the @triton.jit kernels defined by the user so far.

    Triton decides at decoration time: with TRITON_INTERPRET=1 `@triton.jit` makes an
    InterpretedFunction, otherwise a JITFunction. A kernel of the other kind than the current
    setting was defined before the switch (e.g. before `import autograder`) and will not follow it.
    Triton's and torch's own kernels are left out: they are not the student's to redefine.
    """
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:
        return [], []
    compiled, interpreted = [], []
    for mod_name, module in list(sys.modules.items()):
        if module is None or mod_name.split(".")[0] in ("triton", "torch", "autograder"):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            if isinstance(value, InterpretedFunction):
                interpreted.append(f"{mod_name}.{name}")
            elif isinstance(value, JITFunction):
                compiled.append(f"{mod_name}.{name}")
    return sorted(set(compiled)), sorted(set(interpreted))


def _warnings(info: dict) -> list[str]:
    warn = []
    if info["triton"] is None:
        warn.append("triton is not installed: no kernel can run. `pip install 'triton>=3.2'` (on Colab, rerun "
                    "the setup cell), then restart the kernel.")
    elif _version_tuple(info["triton"]) < MIN_TRITON:
        warn.append(f"Triton {info['triton']} is older than {'.'.join(map(str, MIN_TRITON))}: the course uses "
                    f"tl.range, exp2 and interpreter fixes of 3.2+. Upgrade triton together with a torch built "
                    f"for it (on Colab: a newer runtime), then restart the kernel.")
    if info["tier"] == "cpu" and info["torch_cuda"] and os.environ.get("AUTOGRADER_TIER", "auto") == "auto":
        warn.append(f"torch is a CUDA build (CUDA {info['torch_cuda']}) but sees no GPU, so the CPU tier runs. "
                    f"On Colab: Runtime > Change runtime type > T4 GPU, then run from the top again. "
                    f"Elsewhere check nvidia-smi and CUDA_VISIBLE_DEVICES.")
    if info["interpreted"] and info["dtype"] == "bfloat16":
        warn.append("bf16 in the Triton interpreter: its bf16 tl.dot multiplies raw bit patterns (triton#11584), "
                    "so results are wrong. Use float16/float32 on the CPU tier (unset TRITON_INTERPRET on a GPU).")
    if info["tier"] == "gpu" and info["interpreted"]:
        warn.append("TRITON_INTERPRET is set on a GPU machine: kernels run in the slow interpreter, which has no "
                    "bf16 tl.dot (triton#11584). Unset it, or set AUTOGRADER_TIER=cpu to test the CPU tier on "
                    "purpose, and restart the kernel.")
    cap = info["capability"]
    if cap is not None and tuple(cap) < (8, 0):
        warn.append(f"{info['gpu']} is sm_{cap[0]}{cap[1]} (e.g. a T4): no bf16, so the course runs in float16, "
                    f"and a block has 64 KiB of shared memory: take tile sizes from "
                    f"autograder.tiles.attention_tiles (128x128 tiles raise OutOfResources).")
        if tuple(cap) < (7, 5):
            warn.append(f"sm_{cap[0]}{cap[1]} is older than Triton supports well (7.5+): expect compile errors.")
    compiled, interpreted = _kernels_by_mode()
    stale = interpreted if not info["interpreted"] else compiled
    if stale:
        mode = "interpreted" if not info["interpreted"] else "compiled"
        warn.append(f"{len(stale)} kernel(s) ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}) were "
                    f"defined as {mode} before TRITON_INTERPRET was {'unset' if mode == 'interpreted' else 'set'}: "
                    f"Triton reads it when a kernel is defined. Restart the kernel and run from the top "
                    f"(`import autograder` before any @triton.jit).")
    return warn


def preflight(verbose: bool = True) -> dict:
    """Print and return tier, device, dtype, versions and warnings for this machine."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "tier": device.TIER,
        "device": str(device.DEVICE),
        "gpu": device.GPU_NAME,
        "capability": list(device.CAPABILITY) if device.CAPABILITY else None,
        "dtype": str(device.DTYPE).removeprefix("torch."),
        "dtypes": [str(d).removeprefix("torch.") for d in device.DTYPES],
        "interpreted": device.interpreted(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "banner": device.BANNER,
    }
    info["warnings"] = _warnings(info)
    if verbose:
        where = info["device"] if info["gpu"] is None else \
            f"{info['device']} ({info['gpu']}, sm_{info['capability'][0]}{info['capability'][1]})"
        cuda = f" (CUDA {info['torch_cuda']})" if info["torch_cuda"] else " (CPU build)"
        lines = ["[autograder] preflight",
                 f"  tier     {info['tier'].upper()}" + (" (Triton interpreter)" if info["interpreted"] else ""),
                 f"  device   {where}",
                 f"  dtype    {info['dtype']}" + (f" (checks also {', '.join(info['dtypes'][1:])})"
                                                   if len(info["dtypes"]) > 1 else ""),
                 f"  python   {info['python']}",
                 f"  torch    {info['torch']}{cuda}",
                 f"  triton   {info['triton'] or 'NOT INSTALLED'}"]
        if info["tier"] == "cpu":
            # why the CPU tier and why not bf16: the banner says it, in one place (autograder/device.py)
            lines.append(f"  no GPU   {device.BANNER.removeprefix('[autograder] ')}; benchmarks need a GPU")
        lines += [f"  WARNING  {w}" for w in info["warnings"]] or ["  ok       no known-bad combination"]
        print("\n".join(lines))
    return info
