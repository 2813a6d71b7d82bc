"""A failed check is a `Failure` in parts: the student reads its full rendering, the scoreboard,
benchmark notes and grade reports one summary line built from the parts."""
import sys
import types
from pathlib import Path

import pytest
import torch

import autograder  # noqa: I001 - first: it picks the tier before any kernel is defined
from autograder import failure, scoreboard
from autograder.failure import CheckFailed, Failure, NotImplementedYet

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.grading.score import cell_score, error_line  # noqa: E402

CASE_FAILURE = Failure("3 output row(s) were never written (batch 0, rows 97-99).", check="Problem 4",
                       case="[ragged] B=1 H=2 N=100 D=16 causal float32", tier="cpu",
                       where="batch 0, rows 97-99", hints=("only the last rows: cdiv(N, BLOCK_M)", "second hint"))


def test_a_case_failure_renders_as_the_checks_always_worded_it():
    assert CASE_FAILURE.render() == (
        "Problem 4 failed on case [ragged] B=1 H=2 N=100 D=16 causal float32 (cpu tier):\n"
        "  3 output row(s) were never written (batch 0, rows 97-99).\n"
        "  hint: only the last rows: cdiv(N, BLOCK_M)\n"
        "  hint: second hint")
    assert Failure("the loss curves part", check="Problem 9").render() == "Problem 9: the loss curves part"
    outer = Failure("tile skipping is graded on a correct kernel", check="Problem 6", detail=CASE_FAILURE.render())
    assert outer.render() == "Problem 6: tile skipping is graded on a correct kernel\n" + CASE_FAILURE.render()


def test_the_summary_is_built_from_the_parts():
    assert CASE_FAILURE.summary() == ("Problem 4: 3 output row(s) were never written (batch 0, rows 97-99). "
                                      "(case [ragged] B=1 H=2 N=100 D=16 causal float32)")
    assert Failure("wrong", check="Problem 3", where="batch 1").summary() == "Problem 3: wrong at batch 1"
    raised = Failure("your function raised ValueError: boom\n  second line", check="Problem 3", case="[x] n=1")
    assert raised.summary() == "Problem 3: your function raised ValueError: boom (case [x] n=1)"
    assert len(CASE_FAILURE.summary(40)) == 40 and CASE_FAILURE.summary(40).endswith("...")


def test_parse_recovers_the_parts_and_renders_the_same_text():
    parsed = Failure.parse(CASE_FAILURE.render())
    assert (parsed.check, parsed.case, parsed.tier, parsed.what, parsed.hints) == \
        (CASE_FAILURE.check, CASE_FAILURE.case, CASE_FAILURE.tier, CASE_FAILURE.what, CASE_FAILURE.hints)
    multi = Failure("your function raised RuntimeError: a\nb\n  c", check="Problem 2a", case="[edge] n=1", tier="gpu",
                    hints=("run the case yourself",))
    assert Failure.parse(multi.render()) == multi
    plain = "Problem 9, autograd contract: q and v did not ask for gradients but got some."
    assert Failure.parse(plain) == Failure(plain) and Failure.parse(plain).render() == plain


def test_check_failed_carries_the_failure_and_its_text():
    exc = CheckFailed(CASE_FAILURE)
    assert exc.failure is CASE_FAILURE and str(exc) == CASE_FAILURE.render() and isinstance(exc, AssertionError)
    rebuilt = CheckFailed(Failure.from_fields(exc.failure.fields()))    # how autograder.record replays it
    assert str(rebuilt) == str(exc) and rebuilt.failure == CASE_FAILURE
    import pickle
    assert pickle.loads(pickle.dumps(exc)).failure == CASE_FAILURE       # parts kept, never parsed back
    words = CheckFailed("just words")
    assert words.failure == Failure("just words") and str(words) == "just words"
    stub = NotImplementedYet.of("Problem 4")
    assert failure.summary(stub) == str(stub) and str(stub).startswith("Problem 4 is not implemented yet: fill in")
    assert failure.summary(ValueError("first\nsecond")) == "first"


def test_a_real_check_failure_has_its_parts():
    def calls_the_reference(q, k, v, **kw):
        o, lse = autograder.reference_attention(q, k, v, **kw, return_lse=True)    # refused inside the check
        return o, lse
    case = autograder.Case("basic", 1, 1, 1, 70, 16, seed=3, is_causal=True)

    def half_rows(q, k, v, **kw):
        o = torch.zeros_like(q)
        return o, torch.zeros(q.shape[:3], dtype=q.dtype, device=q.device)
    with pytest.raises(CheckFailed) as info:
        autograder.check(1, half_rows, cases=[case], verbose=False)
    f = info.value.failure
    assert (f.check, f.case, f.tier) == ("Problem 1", f"[basic] {case.describe()}", autograder.TIER)
    assert f.where and f.where in f.what and "differ from the reference" in f.what
    header = f"Problem 1 failed on case [basic] {case.describe()} ({autograder.TIER} tier):"
    assert str(info.value).splitlines()[0] == header
    with pytest.raises(CheckFailed, match="cheating detected") as info:
        autograder.check(1, calls_the_reference, cases=[case], verbose=False)
    assert info.value.failure.what.startswith("cheating detected")


def test_scoreboard_row_is_the_failure_summary(monkeypatch, capsys):
    monkeypatch.setattr(scoreboard.importlib, "import_module", lambda name: types.SimpleNamespace())

    def failing(problem, module):
        raise CheckFailed(CASE_FAILURE)
    monkeypatch.setattr(scoreboard, "_check_problem", failing)
    assert scoreboard.main(["--no-bench", "--problems", "4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: " + CASE_FAILURE.summary(70) in out
    assert "failed on case" not in out          # the rendering's header line is not what the row shows


def test_scoreboard_prints_each_row_as_its_problem_finishes(monkeypatch, capsys):
    """No silent wait: problem 3's row is out (flushed) before problem 4's check starts."""
    monkeypatch.setattr(scoreboard.importlib, "import_module", lambda name: types.SimpleNamespace())
    seen = {}

    def passing(problem, module):
        seen[problem] = capsys.readouterr().out
        return types.SimpleNamespace(passed=problem)
    monkeypatch.setattr(scoreboard, "_check_problem", passing)
    assert scoreboard.main(["--no-bench", "--problems", "3", "4"]) == 0
    assert seen[3].rstrip(" ").endswith("\n      3")               # the open line names what runs
    assert "PASS" in seen[4] and seen[4].rstrip(" ").endswith("\n      4"), seen[4]


def test_grade_reason_is_the_failure_summary():
    exc = CheckFailed(CASE_FAILURE)
    out = {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
    assert error_line(out) == "CheckFailed: " + CASE_FAILURE.summary()
    plain = {"ename": "NameError", "evalue": "name 'x' is not defined"}
    assert error_line(plain) == "NameError: name 'x' is not defined"
    assert error_line({"ename": "AssertionError", "evalue": ""}) == "AssertionError"
    import nbformat
    cell = nbformat.v4.new_code_cell("check()", metadata={"nbgrader": {"points": 2, "grade": True, "grade_id": "g"}})
    cell.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue=str(exc), traceback=[])]
    assert cell_score(cell) == (0.0, "CheckFailed: " + CASE_FAILURE.summary())


def test_the_grader_reads_failures_without_importing_the_autograder():
    import subprocess
    code = ("from tools.grading._failure import checks_failure; import sys; "
            "print(checks_failure.Failure.parse('x').what, 'autograder' in sys.modules, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["x", "False", "False"]


def test_bench_note_is_the_failure_summary(monkeypatch):
    """bench.measure runs on a GPU only: its CUDA calls are stood in for, the function fails a check."""
    from autograder import bench
    fake_cuda = types.SimpleNamespace(synchronize=lambda: None, reset_peak_memory_stats=lambda: None,
                                      memory_allocated=lambda: 0, empty_cache=lambda: None)
    monkeypatch.setattr(bench.torch, "cuda", fake_cuda)

    def failing(q, k, v, **kw):
        raise CheckFailed(CASE_FAILURE)
    rec = bench.measure(failing, None, None, None, bench.Shape(1, 1, 1, 16, 16), "yours")
    assert rec["note"] == "CheckFailed: " + CASE_FAILURE.summary(60)


def test_replay_reason_is_the_failure_summary():
    import nbformat
    from tools.grading.replay import replayer
    cell = nbformat.v4.new_code_cell(
        "from autograder.failure import CheckFailed, Failure\n"
        f"raise CheckFailed(Failure({CASE_FAILURE.what!r}, check='Problem 4', case={CASE_FAILURE.case!r}, tier='cpu'))",
        metadata={"nbgrader": {"grade": True, "grade_id": "g", "points": 1}})
    verdict = replayer.replay(nbformat.v4.new_notebook(cells=[cell]))
    assert verdict == {"g": {"ok": False, "why": "CheckFailed: " + CASE_FAILURE.summary()}}


def test_a_hostile_error_text_parses_in_linear_time():
    """A submission can raise its own CheckFailed with any text, which reaches the notebook output
    whole and is parsed by the grader: a long line built to make the header pattern backtrack must
    not stall grading (it took minutes per megabyte before the length cap)."""
    import time
    header = " failed on case [" * 60000 + " (x tier):"          # about 1 MB on one line
    t0 = time.perf_counter()
    parsed = Failure.parse(header + "\n  boom")
    assert time.perf_counter() - t0 < 1.0
    assert parsed.check == "" and parsed.what.startswith(" failed on case [")
    out = {"ename": "CheckFailed", "evalue": header + "\n  boom"}
    assert len(error_line(out)) <= 300
