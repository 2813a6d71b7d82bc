"""Autograder of the FlashAttention-in-Triton course.

`import autograder` first: it picks the tier (CUDA GPU, or the Triton interpreter on the CPU) and
must run before any @triton.jit kernel is defined.
"""
from . import device  # noqa: I001 - sets TRITON_INTERPRET before anything imports triton kernels
from .device import BANNER, DEVICE, DTYPE, TIER
from . import backward, bench, masks, tiles
from .backward import check_backward, try_backward
from .cases import Case, visible_cases
from .check import NotImplementedYet, check, check_case
from .explore import try_it
from .preflight import preflight
from .reference import naive_attention, reference_attention, validate_attention_inputs

__all__ = ["BANNER", "DEVICE", "DTYPE", "TIER", "Case", "NotImplementedYet", "backward", "check", "check_backward",
           "check_case", "masks", "try_backward",
           "naive_attention", "preflight", "reference_attention", "try_it", "validate_attention_inputs", "visible_cases"]

if not getattr(device, "_banner_shown", False):
    print(BANNER)
    device._banner_shown = True
