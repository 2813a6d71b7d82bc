"""Autograder of the FlashAttention-in-Triton course.

`import autograder` first: it picks the tier (CUDA GPU, or the Triton interpreter on the CPU) and
must run before any @triton.jit kernel is defined.

The package is in rooms by role:
    spec/       what is asked: the problems, their cases, masks, the reference, tile sizes
    checks/     how an answer is judged: attention (`check`), backward, triton_basics,
                tile_skipping, capstone, and what they share: diagnose, failure
    watch/      how student code is observed while it runs: guard, probe, record, gpu_compile
    teaching/   what the notebooks show: plots, schedule, explore, preflight
    device.py (the tier), bench.py (benchmarks), scoreboard.py (`make run`)
The modules the notebooks name keep their short names: `autograder.masks`, `from autograder.tiles
import attention_tiles`, ... (PUBLIC_MODULES below).
"""
import importlib
import importlib.util
import sys

from . import device  # noqa: I001 - sets TRITON_INTERPRET before anything imports triton kernels
from .device import BANNER, DEVICE, DTYPE, TIER
from . import bench  # noqa: F401 - autograder.bench
from .checks import backward
from .checks.attention import check, check_case
from .checks.core import NotImplementedYet
from .checks.backward import check_backward, try_backward
from .spec import masks, tiles  # noqa: F401 - autograder.masks, autograder.tiles
from .spec.cases import Case, visible_cases
from .spec.reference import naive_attention, reference_attention, validate_attention_inputs
from .teaching.explore import try_it
from .teaching.preflight import preflight

# short name -> the module in its room: `autograder.<short>` and `import autograder.<short>` both work
PUBLIC_MODULES = {
    "masks": "spec.masks", "tiles": "spec.tiles", "problems": "spec.problems", "cases": "spec.cases",
    "reference": "spec.reference",
    "backward": "checks.backward", "triton_basics": "checks.triton_basics", "tile_skipping": "checks.tile_skipping",
    "capstone": "checks.capstone", "failure": "checks.failure",
    "record": "watch.record",
    "plots": "teaching.plots", "schedule": "teaching.schedule", "explore": "teaching.explore",
    "preflight": "teaching.preflight",
}


def __getattr__(name):
    """`autograder.plots` and friends, imported when first named (matplotlib only when plotted)."""
    if name in PUBLIC_MODULES:
        module = importlib.import_module(f"{__name__}.{PUBLIC_MODULES[name]}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ShortNames:
    """Finder and loader of `import autograder.masks` and friends: the module in its room, one object
    under both names (never executed twice, so state such as the guard's is never doubled)."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        prefix, _, short = fullname.partition(".")
        if prefix != __name__ or short not in PUBLIC_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, cls)

    @staticmethod
    def create_module(spec):
        return importlib.import_module(f"{__name__}.{PUBLIC_MODULES[spec.name.partition('.')[2]]}")

    @staticmethod
    def exec_module(module):
        pass


if not any(getattr(f, "__qualname__", "") == "_ShortNames" for f in sys.meta_path):
    sys.meta_path.insert(0, _ShortNames)

__all__ = ["BANNER", "DEVICE", "DTYPE", "TIER", "Case", "NotImplementedYet", "backward", "bench", "check", "check_backward",
           "check_case", "masks", "tiles", "try_backward",
           "naive_attention", "preflight", "reference_attention", "try_it", "validate_attention_inputs", "visible_cases"]

if not getattr(device, "_banner_shown", False):
    print(BANNER)
    device._banner_shown = True
