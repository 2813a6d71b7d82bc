"""The standalone scripts of tools/ the grader drives; they stay runnable by path, so they are not
part of this package and are found whichever way the package was imported."""
import importlib.util
import sys
from pathlib import Path

try:                      # tools/ on sys.path: how tools/grade.py runs
    import course_format
    import replay as replay_tool
    import sandbox as sandbox_tool
except ImportError:       # imported as tools.grading
    from tools import course_format
    from tools import replay as replay_tool
    from tools import sandbox as sandbox_tool


def _load_by_path(name, path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module          # dataclasses look their module up while building a class
        spec.loader.exec_module(module)
    return sys.modules[name]


# the checks' Failure, to read failures back from notebook outputs: by path, because importing the
# autograder package imports torch and picks a tier, which the grader's own process never needs
failure_tool = _load_by_path("autograder_failure", Path(__file__).resolve().parents[2] / "autograder" / "checks" / "failure.py")

__all__ = ["course_format", "failure_tool", "replay_tool", "sandbox_tool"]
