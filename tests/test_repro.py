"""`linebridge repro`'s progress line: stage families, the ETA from this sitting's times, the clock format.

The command itself runs the whole tiny study in tests/test_pipeline.py (slow)."""

from __future__ import annotations

import pytest

from linebridge.repro import AT_ONCE_GAIN, DEFAULT_GUESS, FIRST_GUESS, clock, dag, eta, family, topological


def test_family_is_the_stage_name_before_the_at():
    assert family("train@A5-s0") == "train" and family("train-baseline@scft") == "train-baseline"
    assert family("prepare") == "prepare"


def test_eta_uses_this_sittings_mean_per_family_else_the_first_guess():
    stages = ["train@A0-s1", "train@A0-s2", "evaluate@A0-s1", "report", "release"]
    assert eta(stages, {}) == pytest.approx(2 * FIRST_GUESS["train"] + FIRST_GUESS["evaluate"] + 60 + DEFAULT_GUESS)
    took = {"train": [100.0, 300.0], "evaluate": [10.0]}
    assert eta(stages, took) == pytest.approx(2 * 200.0 + 10.0 + FIRST_GUESS["report"] + DEFAULT_GUESS)


def test_clock_reads_minutes_then_hours():
    assert clock(0) == "0 min" and clock(89) == "1 min" and clock(3599) == "1 h 00 min" and clock(13500) == "3 h 45 min"


def test_stages_run_after_the_stages_they_depend_on():
    dot = "\n".join(
        ["strict digraph {", '"data.dvc";', '"prepare";', '"train@A0-s0";', '"evaluate@A0-s0";', '"report";']
        + ['"data.dvc" -> "prepare";', '"evaluate@A0-s0" -> "report";', '"train@A0-s0" -> "evaluate@A0-s0";']
        + ['"prepare" -> "train@A0-s0";', "}"]
    )
    before = dag(dot)
    assert before == {
        "prepare": set(),
        "train@A0-s0": {"prepare"},
        "evaluate@A0-s0": {"train@A0-s0"},
        "report": {"evaluate@A0-s0"},
    }
    assert topological(before) == ["prepare", "train@A0-s0", "evaluate@A0-s0", "report"]


def test_eta_at_two_jobs_shares_the_machine():
    """Two at once: a first guess (one at a time) stretches by 2 / the measured gain; the total is split between
    the jobs; times measured this sitting (already at two at once) are used as they are."""
    stages = ["train@A0-s1", "train@A0-s2"]
    assert eta(stages, {}, jobs=2) == pytest.approx(2 * FIRST_GUESS["train"] / AT_ONCE_GAIN)
    assert eta(stages, {"train": [500.0]}, jobs=2) == pytest.approx(500.0)
