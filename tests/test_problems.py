"""The problem registry (autograder.problems) agrees with what the checker, the benchmarks and the
reference solutions actually do: a flag that says "no window" while the checker generates window
cases would send every feature lookup the wrong way."""
import importlib
import re
from pathlib import Path

import pytest

import autograder
from autograder import bench, problems
from autograder.backward import backward_cases
from autograder.problems import PROBLEMS

REPO = Path(__file__).resolve().parents[1]
TIERS = ("cpu", "gpu")


def test_registry_is_numbered_and_named_consistently():
    assert sorted(PROBLEMS) == list(range(1, 10))
    for n, p in PROBLEMS.items():
        assert p.number == n and p.slug.startswith(f"p{n}_") and p.title
        assert (REPO / "notebooks" / p.slug / f"{p.slug}.py").is_file(), p.slug
        assert p.checker in ("check", "check_backward", "triton_basics"), p
        assert p.backward == (p.checker == "check_backward"), p


@pytest.mark.parametrize("number", sorted(PROBLEMS))
def test_solution_module_exposes_its_entry_point(number):
    p = PROBLEMS[number]
    module = importlib.import_module(p.module)
    if p.entry_point is None:                      # Problem 2: one function per part
        from autograder.triton_basics import PARTS
        assert all(callable(getattr(module, name, None)) for name in PARTS.values())
    else:
        assert callable(getattr(module, p.entry_point, None)), f"{p.module} has no {p.entry_point}"


@pytest.mark.parametrize("number", sorted(PROBLEMS))
def test_tiles_are_the_ones_the_reference_reads(number):
    p = PROBLEMS[number]
    source = (REPO / "solutions" / f"{p.slug}.py").read_text(encoding="utf-8")
    assert set(re.findall(r"\b(attention_tiles|backward_tiles)\(", source)) == set(p.tiles)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("number", problems.numbers("check"))
def test_forward_flags_match_the_visible_cases(number, tier):
    p, cases = PROBLEMS[number], autograder.visible_cases(number, tier)
    assert p.window == any(c.window_size is not None for c in cases)
    assert p.sinks == any(c.sink_size is not None for c in cases)
    assert p.gqa == any(c.Hq != c.Hkv for c in cases)
    assert {c.is_causal for c in cases if c.family == "basic"} == {p.causal}
    assert not any(c.sink_logits for c in cases) and not p.sink_logits and not p.backward


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("number", problems.numbers("check_backward"))
def test_backward_flags_match_the_backward_cases(number, tier):
    p, cases = PROBLEMS[number], backward_cases(number, tier)
    assert p.window == any(c.window_size is not None for c in cases)
    assert p.sinks == any(c.sink_size is not None for c in cases)
    assert p.sink_logits == any(c.sink_logits for c in cases)
    assert p.gqa == any(c.Hq != c.Hkv for c in cases)
    assert {c.is_causal for c in cases if c.family == "basic"} >= {p.causal}


def test_benchmark_shapes_use_only_the_problems_features():
    for p in PROBLEMS.values():
        for s in p.bench_shapes + p.backward_shapes:
            assert s.is_causal == p.causal and (s.Hq != s.Hkv) <= p.gqa, (p.number, s)
            assert (s.window_size is not None) <= p.window and (s.sink_size is not None) <= p.sinks, (p.number, s)
        assert bool(p.backward_shapes) <= p.backward
    assert bench.SOLUTION_MODULES == {n: p.module for n, p in PROBLEMS.items() if p.entry_point}
    assert bench.SHAPES == {n: list(p.bench_shapes) for n, p in PROBLEMS.items() if p.bench_shapes}
    assert bench.BACKWARD_SHAPES == {n: list(p.backward_shapes) for n, p in PROBLEMS.items() if p.backward_shapes}


def test_unknown_problem_numbers_name_the_valid_ones():
    with pytest.raises(ValueError, match=re.escape("one of [1, 2, 3, 4, 5, 6, 7, 8, 9], got 10")):
        problems.get(10)
    with pytest.raises(ValueError, match=re.escape("one of [1, 3, 4, 5, 6, 7], got 0")):
        autograder.check(0, lambda *a: None)
    with pytest.raises(ValueError, match=re.escape("[1, 3, 4, 5, 6, 7]")):
        autograder.visible_cases(8)
    with pytest.raises(ValueError, match=re.escape("Problems [8, 9], got 7")):
        autograder.check_backward(7, lambda *a: None)
    with pytest.raises(ValueError, match="own checks"):
        autograder.check(2, lambda *a: None)


def test_sources_cite_no_path_outside_the_repository():
    for path in sorted((REPO / "autograder").glob("*.py")):
        assert "../" not in path.read_text(encoding="utf-8"), path
