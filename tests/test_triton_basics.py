"""Problem 2's checks (autograder.triton_basics): the notebook's reference solutions pass, the
release stub reports "not implemented yet", and planted bugs fail with the message a student
needs.

The code under test is the notebook's own: the export=true cells of
notebooks/p2_triton_basics/p2_triton_basics.py, assembled as tools/build_course.py assembles
solutions/p2_triton_basics.py (so the tests need no build step, no jupytext, and never drift
from the notebook). A planted bug is a textual edit of that module, written to a temporary file and
imported (Triton reads a kernel's source from its file); every edit asserts that its target text
exists, so a notebook change cannot silently turn a bug test into one that cannot fail.
"""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

import autograder  # noqa: F401 - first: picks the tier before any kernel is defined
from autograder import NotImplementedYet
from autograder import triton_basics as tb

REPO = Path(__file__).resolve().parent.parent
SLUG = "p2_triton_basics"
NOTEBOOK = REPO / "notebooks" / SLUG / f"{SLUG}.py"


def _export_cells(text: str) -> list:
    """The code of the notebook's `# %% ... export=true` cells (jupytext percent format)."""
    cells = re.split(r"^(# %%.*)$", text, flags=re.M)       # [preamble, header, body, header, body, ...]
    return [body.strip("\n") for header, body in zip(cells[1::2], cells[2::2])
            if re.search(r"\bexport=true\b", header) and "[markdown]" not in header]


def _solution_source() -> str:
    """The export=true cells with the solution markers removed: what tools/build_course.py writes
    to solutions/p2_triton_basics.py (parsed here without jupytext, so the GPU tier needs no extras)."""
    cells = _export_cells(NOTEBOOK.read_text())
    return "\n\n\n".join("\n".join(ln for ln in c.splitlines()
                                     if ln.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
                           for c in cells) + "\n"


def _release_source() -> str:
    """The export cells as a student first sees them: every solution region replaced by the stub
    nbgrader writes (`# YOUR CODE HERE` + `raise NotImplementedError()`, same indent)."""
    stub = re.compile(r"^( *)### BEGIN SOLUTION\n.*?^ *### END SOLUTION$", flags=re.S | re.M)
    cells = [stub.sub(lambda m: f"{m[1]}# YOUR CODE HERE\n{m[1]}raise NotImplementedError()", c)
             for c in _export_cells(NOTEBOOK.read_text())]
    src = "\n\n\n".join(cells) + "\n"
    assert src.count("raise NotImplementedError()") == 4, src
    return src


SOURCE = _solution_source()
_counter = [0]


def _load(source: str, tmp_path: Path):
    _counter[0] += 1
    name = f"_p2_variant_{_counter[0]}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mutate(*edits):
    src = SOURCE
    for old, new in edits:
        assert src.count(old) == 1, f"planted bug target not found exactly once in the notebook: {old!r}"
        src = src.replace(old, new)
    return src


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return _load(SOURCE, tmp_path_factory.mktemp("ref"))


# ------------------------------------------------------------------------------------------------
# the reference passes every visible case, quietly and loudly

@pytest.mark.parametrize("part,fn_name", [("2a", "axpb"), ("2b", "row_logsumexp"), ("2c", "copy_bhnd")])
def test_reference_passes(ref, part, fn_name):
    summary = tb.check_basics(part, getattr(ref, fn_name), verbose=False)
    assert summary.passed == len(tb.visible_cases(part))


def test_rows_printed(ref, capsys):
    tb.check_2a(ref.axpb, family="ragged")
    out = capsys.readouterr().out
    assert "ok  [ragged ] n=1000" in out and "all 3 cases passed" in out


def test_gpu_cases_exist_and_differ():
    for part in ("2a", "2b", "2c"):
        cpu, gpu = tb.visible_cases(part, "cpu"), tb.visible_cases(part, "gpu")
        assert {c.family for c in cpu} == {c.family for c in gpu}
        assert cpu != gpu


def test_unknown_family_and_part(ref):
    with pytest.raises(ValueError, match="families"):
        tb.check_2a(ref.axpb, family="nope")
    with pytest.raises(ValueError, match="part must be"):
        tb.check_basics("2d", ref.axpb)


# ------------------------------------------------------------------------------------------------
# the release stub

def test_release_stub_not_implemented(tmp_path):
    mod = _load(_release_source(), tmp_path)
    for check, fn in ((tb.check_2a, mod.axpb), (tb.check_2b, mod.row_logsumexp), (tb.check_2c, mod.copy_bhnd)):
        with pytest.raises(NotImplementedYet, match="not implemented yet"):
            check(fn, verbose=False)


# ------------------------------------------------------------------------------------------------
# planted bugs: (name, edits, function, part, family, expected message fragments)

BUGS = [
    # 2a
    ("2a grid too small", [("grid = (triton.cdiv(n, BLOCK),)", "grid = (n // BLOCK,)")],
     "axpb", "2a", "ragged", ["never written", "cdiv(n, BLOCK)"]),
    ("2a store mask too tight", [("mask = offs < n ", "mask = offs < n - 1 ")],
     "axpb", "2a", "ragged", ["never written", "elements of y"]),
    ("2a no masks", [("X_ptr + offs * stride_x, mask=mask)", "X_ptr + offs * stride_x)"),
                     ("y.to(Y_ptr.dtype.element_ty), mask=mask)", "y.to(Y_ptr.dtype.element_ty))")],
     "axpb", "2a", "ragged", ["outside the output tensor", "mask="]),
    ("2a stride ignored", [("X_ptr + offs * stride_x", "X_ptr + offs")],
     "axpb", "2a", "strided", ["read x as if it were contiguous"]),
    ("2a a and b swapped", [("y = a * x.to(tl.float32) + b", "y = b * x.to(tl.float32) + a")],
     "axpb", "2a", "basic", ["a and b are swapped"]),
    ("2a torch cheat", [("    axpb_kernel[grid](x, y, a, b, n, x.stride(0), BLOCK=BLOCK)\n    return y",
                         "    axpb_kernel[grid](x, y, a, b, n, x.stride(0), BLOCK=BLOCK)\n    return a * x + b")],
     "axpb", "2a", "basic", ["cheating detected", "aten.mul"]),
    # 2b
    ("2b other=0", [('other=float("-inf")', "other=0.0")],
     "row_logsumexp", "2b", "ragged", ["counted as 0.0", "other=float('-inf')"]),
    ("2b no load mask", [(",\n                    mask=mask, other=float(\"-inf\"))", ")")],
     "row_logsumexp", "2b", "ragged", ["NaN", "read past the end of x"]),
    ("2b no rescale", [("l_i = l_i * tl.exp(m_i - m_safe) +", "l_i = l_i +")],
     "row_logsumexp", "2b", "basic", ["not rescaled"]),
    ("2b no safe max", [("m_safe = tl.where(m_new == float(\"-inf\"), 0.0, m_new)", "m_safe = m_new")],
     "row_logsumexp", "2b", "stable", ["NaN", "m_safe"]),
    ("2b no max subtraction", [("tl.exp(x - m_safe[:, None])", "tl.exp(x)"),
                               ("l_i = l_i * tl.exp(m_i - m_safe)", "l_i = l_i"),
                               ("m_i + tl.log(l_i)", "tl.log(l_i)")],
     "row_logsumexp", "2b", "stable", ["inf", "subtract the running max"]),
    ("2b row stride assumed N", [("offs_m[:, None] * stride_xm", "offs_m[:, None] * N")],
     "row_logsumexp", "2b", "strided", ["assumed row stride"]),
    ("2b column stride ignored", [("offs_n[None, :] * stride_xn,", "offs_n[None, :],")],
     "row_logsumexp", "2b", "strided", ["assumed column stride 1"]),
    ("2b only first tile", [("for start_n in range(0, N, BLOCK_N):", "for start_n in range(0, BLOCK_N, BLOCK_N):")],
     "row_logsumexp", "2b", "basic", ["only the first 64 columns"]),
    ("2b max only", [("m_i + tl.log(l_i)", "m_i")],
     "row_logsumexp", "2b", "basic", ["row max"]),
    ("2b grid too small", [("grid = (triton.cdiv(M, BLOCK_M),)", "grid = (M // BLOCK_M,)")],
     "row_logsumexp", "2b", "ragged", ["never written", "cdiv(M, BLOCK_M)"]),
    ("2b torch cheat", [("    return lse\n", "    return torch.logsumexp(x.float(), 1)\n")],
     "row_logsumexp", "2b", "basic", ["cheating detected"]),
    # 2c
    ("2c output base with x's strides", [("O_ptr += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh",
                                          "O_ptr += b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh")],
     "copy_bhnd", "2c", "strided", ["never written"]),
    ("2c no masks", [(", mask=mask)\n    tl.store", ")\n    tl.store"), ("tile, mask=mask)", "tile)")],
     "copy_bhnd", "2c", "ragged", ["outside the output tensor", "mask="]),
    ("2c batch offset missing", [("X_ptr += b.to(tl.int64) * stride_xb + ", "X_ptr += ")],
     "copy_bhnd", "2c", "ragged", ["holds the input's (batch 0", "batch 0 instead of 1"]),
    ("2c stride_xd ignored", [("offs_d[None, :] * stride_xd", "offs_d[None, :]")],
     "copy_bhnd", "2c", "strided", ["assumed stride_xd = 1"]),
    ("2c grid too small", [("grid = (B * H, triton.cdiv(N, BLOCK_N))", "grid = (B * H, N // BLOCK_N)")],
     "copy_bhnd", "2c", "ragged", ["never written", "last rows", "cdiv(N, BLOCK_N)"]),
    ("2c grid misses heads", [("grid = (B * H, triton.cdiv(N, BLOCK_N))", "grid = (B, triton.cdiv(N, BLOCK_N))")],
     "copy_bhnd", "2c", "ragged", ["never written", "B * H programs"]),
    ("2c store mask too tight", [("mask = offs_n[:, None] < N ", "mask = offs_n[:, None] < N - 1 ")],
     "copy_bhnd", "2c", "ragged", ["never written"]),
    ("2c torch copy", [("    return out\n", "    out.copy_(x)\n    return out\n")],
     "copy_bhnd", "2c", "basic", ["cheating detected", "aten.copy_"]),
    ("2c two launches", [("    return out\n", "    copy_bhnd_kernel[grid](x, out, N, H, *x.stride(), *out.stride(), "
                                               "HEAD_DIM=D, BLOCK_N=BLOCK_N)\n    return out\n")],
     "copy_bhnd", "2c", "basic", ["launched 2 kernels"]),
    ("2c non-contiguous output", [("out = torch.empty(B, H, N, D, dtype=x.dtype, device=x.device)",
                                   "out = torch.empty(B, N, H, D, dtype=x.dtype, device=x.device).transpose(1, 2)")],
     "copy_bhnd", "2c", "basic", ["must be contiguous"]),
]


@pytest.mark.parametrize("name,edits,fn_name,part,family,fragments", BUGS, ids=[b[0] for b in BUGS])
def test_planted_bug_fails(tmp_path, name, edits, fn_name, part, family, fragments):
    mod = _load(_mutate(*edits), tmp_path)
    with pytest.raises(AssertionError) as info:
        tb.check_basics(part, getattr(mod, fn_name), family=family, verbose=False)
    msg = str(info.value)
    assert not isinstance(info.value, NotImplementedYet), msg
    assert f"Problem {part} failed on case [{family}" in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in:\n{msg}"


def test_wrong_dtype_and_shape(ref):
    def wrong_dtype(x):
        return ref.row_logsumexp(x).to(x.dtype) if x.dtype != ref.torch.float32 else ref.row_logsumexp(x)[:1]
    with pytest.raises(AssertionError, match="dtype|shape"):
        tb.check_2b(wrong_dtype, family="basic", verbose=False)


def test_python_exception_is_reported(ref):
    def broken(x, a, b):
        raise ValueError("boom")
    with pytest.raises(AssertionError, match="your function raised ValueError: boom"):
        tb.check_2a(broken, family="basic", verbose=False)


def test_strict_guard_allows_views_but_not_math():
    import torch
    x = torch.randn(4, 4)
    with tb.StrictGuard() as g:
        x.t()[1:].unsqueeze(0)
        torch.empty(3)
    assert g.forbidden == []
    with tb.StrictGuard() as g:
        x.contiguous()           # already contiguous: a no-op, allowed
        x.t().contiguous()       # a copy
    assert [op for op, _ in g.forbidden] == ["clone"]
