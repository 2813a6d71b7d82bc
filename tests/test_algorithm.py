"""Tile-skipping checks return one report type on every path (autograder.tile_skipping.SkippingReport).

The mutant catalog's verdicts on the algorithm are graded in tests/test_kill_rate.py; this file pins
the report's fields, on the CPU tier where the interpreter counts tiles."""
import sys
from pathlib import Path

import pytest

import autograder
from autograder import tile_skipping
from autograder.tile_skipping import SkippingReport, TileSkippingFailed

sys.path.insert(0, str(Path(__file__).parent))
import mutants  # noqa: E402

cpu_tier = pytest.mark.skipif(autograder.TIER != "cpu", reason="tiles are counted in the interpreter (CPU tier)")


def mutant(name):
    return mutants.build(next(m for m in mutants.MUTANTS if m.name == name)).flash_attention_forward


def test_a_failing_report_is_raised_for_graded_problems_and_returned_for_problem_4(capsys):
    failing = SkippingReport(6, "cpu", (256, 512), {}, passed=False, message="Problem 6: too many tiles",
                             visits={"key": (40, 160)}, ratio=4.0)
    with pytest.raises(TileSkippingFailed) as info:
        tile_skipping._verdict(failing, verbose=True)
    assert info.value.report is failing and str(info.value) == failing.message
    assert isinstance(info.value, AssertionError) and capsys.readouterr().out == ""
    warned = SkippingReport(4, "cpu", (100,), {}, passed=False, message="Problem 4, N=100", warnings=["masks"])
    assert tile_skipping._verdict(warned, verbose=True) is warned
    assert capsys.readouterr().out == "Problem 4, N=100\n  warning: masks\n"
    assert failing.growth("key") == 4.0


@cpu_tier
def test_problem4_report_counts_one_shape(capsys):
    report = tile_skipping.check_tile_skipping(4, mutants.reference(4).flash_attention_forward)
    assert isinstance(report, SkippingReport)
    assert (report.problem, report.tier, report.sizes, report.mask) == (4, "cpu", (100,), {"is_causal": True})
    assert report.passed and report.warnings == [] and report.ratio is None and report.times_ms == {}
    assert set(report.visits) == {"key", "masked"} and report.visits == report.expected
    assert report.block is not None and report.message.startswith("Problem 4, N=100")
    assert capsys.readouterr().out == report.message + "\n"


@cpu_tier
def test_problem4_masking_every_tile_is_a_warning_not_an_error():
    report = tile_skipping.check_tile_skipping(4, mutant("p4_mask_every_tile"), verbose=False)
    assert not report.passed and report.warnings
    assert report.visits["masked"][0] > report.expected["masked"][0]
    assert report.visits["key"] == report.expected["key"]


@cpu_tier
def test_problem6_report_compares_n_and_2n():
    report = tile_skipping.check_tile_skipping(6, mutants.reference(6).flash_attention_forward, verbose=False)
    assert report.passed and report.sizes == (256, 512) and report.mask["window_size"] == 16
    assert report.visits["key"] == report.expected["key"]
    assert report.ratio == report.growth("key") and 1.5 < report.ratio < 2.6
    assert "O(N * W)" in report.message


@cpu_tier
def test_problem6_quadratic_loop_raises_with_the_report():
    with pytest.raises(TileSkippingFailed) as info:
        tile_skipping.check_tile_skipping(6, mutant("p6_visits_every_tile"), verbose=False)
    report = info.value.report
    assert not report.passed and report.ratio > 2.6 and str(info.value) == report.message
    small, big = report.visits["key"]
    assert big > 2 * report.expected["key"][1] and "O(N^2)" in report.message


@cpu_tier
def test_problem9_report_counts_query_and_key_tiles():
    report = tile_skipping.check_backward_tile_skipping(9, mutants.reference(9).flash_attention_forward, verbose=False)
    assert (report.problem, report.tier, report.sizes, report.passed) == (9, "cpu", (256, 512), True)
    assert set(report.visits) == {"query", "key"} and report.expected == {} and report.times_ms == {}
    assert report.ratio == max(report.growth("query"), report.growth("key")) <= 2.6
