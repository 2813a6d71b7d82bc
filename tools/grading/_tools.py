"""The standalone scripts of tools/ the grader drives; they stay runnable by path, so they are not
part of this package and are found whichever way the package was imported."""
try:                      # tools/ on sys.path: how tools/grade.py runs
    import course_format
    import replay as replay_tool
    import sandbox as sandbox_tool
except ImportError:       # imported as tools.grading
    from tools import course_format
    from tools import replay as replay_tool
    from tools import sandbox as sandbox_tool

__all__ = ["course_format", "replay_tool", "sandbox_tool"]
