"""Which tier runs: a CUDA GPU (bf16, fp16 below sm_80) or the Triton interpreter on the CPU.

Imported first by `autograder/__init__.py`: the interpreter switch must be set before any
`@triton.jit` function is defined, because Triton reads TRITON_INTERPRET at decoration time.
Override with AUTOGRADER_TIER=cpu (force the interpreter, e.g. to debug with print) or =gpu.
"""
import os
import warnings

import torch

_requested = os.environ.get("AUTOGRADER_TIER", "auto").lower()
if _requested not in ("auto", "gpu", "cpu"):
    raise ValueError(f"AUTOGRADER_TIER must be 'auto', 'gpu' or 'cpu', not {_requested!r}")
if _requested == "gpu" and not torch.cuda.is_available():
    raise RuntimeError("AUTOGRADER_TIER=gpu but torch sees no CUDA device; unset it to use the CPU tier")

if _requested == "cpu" or not torch.cuda.is_available():
    TIER = "cpu"
    os.environ["TRITON_INTERPRET"] = "1"
    # The interpreter evaluates every lane with numpy, padding lanes too (log(0), 0/0 on rows past
    # N that are never stored): their RuntimeWarnings are noise. Wrong results are still checked.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"triton\.runtime\.interpreter")
    DEVICE = torch.device("cpu")
    # The interpreter multiplies raw bit patterns for bf16 tl.dot (triton#11584), so the CPU
    # tier checks float16 (the dtype a T4 uses) and float32.
    DTYPE = torch.float16
    DTYPES = (torch.float16, torch.float32)
    CAPABILITY = None
    GPU_NAME = None
    _why = ("no CUDA device" if _requested == "auto" else "AUTOGRADER_TIER=cpu") + \
        ": Triton kernels run in the interpreter (TRITON_INTERPRET=1), small cases, float16/float32 " \
        "(the interpreter has no bf16 tl.dot)"
else:
    TIER = "gpu"
    DEVICE = torch.device("cuda")
    CAPABILITY = torch.cuda.get_device_capability()
    GPU_NAME = torch.cuda.get_device_name()
    # bf16 needs sm_80 (Ampere); a T4 (sm_75) runs the same kernels in fp16.
    DTYPE = torch.bfloat16 if CAPABILITY >= (8, 0) else torch.float16
    DTYPES = (DTYPE,)
    _why = f"{GPU_NAME} (sm_{CAPABILITY[0]}{CAPABILITY[1]}): compiled Triton kernels, " \
        f"{str(DTYPE).removeprefix('torch.')}, full-size cases"

BANNER = f"[autograder] {TIER.upper()} tier: {_why}"


def interpreted() -> bool:
    """True when @triton.jit kernels run in the Triton interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
