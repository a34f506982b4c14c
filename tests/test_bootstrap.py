"""Bootstrap confidence intervals: coverage of the point estimate, shrinkage with more rows, determinism."""

from __future__ import annotations

import math

import pytest

from tunelab.evaluation import bootstrap_ci, exact_match, task_scorer
from tunelab.evaluation.bootstrap import CORPUS_RESAMPLES


def mixed_rows(n: int) -> tuple[list[str], list[str]]:
    """n rows of which 3 in 10 are exact matches; the same mix at every size."""
    references = [f"answer {i}" for i in range(n)]
    predictions = [ref if i % 10 < 3 else "wrong" for i, ref in enumerate(references)]
    return predictions, references


def width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


@pytest.mark.parametrize("name", ["exact_match", "rouge", "bleu", "f1"])
def test_interval_contains_the_point_estimate(name):
    predictions, references = mixed_rows(40)
    point = task_scorer(name)(predictions, references)
    intervals = bootstrap_ci(name, predictions, references)
    assert intervals.keys() == point.keys()
    for key, (low, high) in intervals.items():
        assert low <= point[key] <= high, key


def test_interval_shrinks_with_more_rows():
    small = bootstrap_ci("exact_match", *mixed_rows(20))["exact_match"]
    large = bootstrap_ci("exact_match", *mixed_rows(400))["exact_match"]
    # The standard error falls as 1/sqrt(n): sqrt(400/20) ~ 4.5 times narrower; allow for resampling noise.
    assert width(large) < width(small) / 3
    assert width(large) > 0


def test_same_seed_same_interval():
    rows = mixed_rows(50)
    assert bootstrap_ci("rougeL", *rows, seed=7) == bootstrap_ci("rougeL", *rows, seed=7)
    assert bootstrap_ci("rougeL", *rows, seed=7) != bootstrap_ci("rougeL", *rows, seed=8)
    assert bootstrap_ci("chrf", *rows, n_resamples=20, seed=3) == bootstrap_ci("chrf", *rows, n_resamples=20, seed=3)


@pytest.mark.parametrize("name", ["exact_match", "rouge", "chrf"])
def test_identical_rows_give_a_zero_width_interval(name):
    predictions, references = ["it is very cold"] * 30, ["it is cold"] * 30
    point = task_scorer(name)(predictions, references)
    for key, (low, high) in bootstrap_ci(name, predictions, references, n_resamples=50).items():
        assert low == high == pytest.approx(point[key]), key


def test_fast_path_equals_rescoring_the_same_resamples():
    # An unmarked copy of exact_match goes through the corpus path; the same seed draws the same resamples.
    def unmarked(predictions: list[str], references: list[str]) -> dict[str, float]:
        return exact_match(predictions, references)

    rows = mixed_rows(60)
    fast = bootstrap_ci(exact_match, *rows, n_resamples=300)
    slow = bootstrap_ci(unmarked, *rows, n_resamples=300)
    assert fast["exact_match"] == pytest.approx(slow["exact_match"], abs=1e-12)


def test_corpus_level_metrics_default_to_fewer_resamples():
    calls = []

    def counting(predictions: list[str], references: list[str]) -> dict[str, float]:
        calls.append(len(predictions))
        return exact_match(predictions, references)

    bootstrap_ci(counting, *mixed_rows(10))
    assert len(calls) == 1 + CORPUS_RESAMPLES  # the point estimate, then one call per resample


def test_key_missing_from_some_resamples_uses_the_others():
    # "bird" is one row in 30, so about a third of resamples have no bird reference and no recall.bird key.
    references = ["cat"] * 15 + ["dog"] * 14 + ["bird"]
    predictions = ["cat"] * 10 + ["dog"] * 5 + ["dog"] * 14 + ["bird"]
    intervals = bootstrap_ci("f1", predictions, references)
    assert intervals["recall.bird"] == (1.0, 1.0)
    assert all(not math.isnan(low) for low, _ in intervals.values())


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci("exact_match", ["a"], ["a"], confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci("exact_match", ["a"], ["a"], n_resamples=0)
    with pytest.raises(ValueError, match="pair up"):
        bootstrap_ci("bleu", ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci("rogue", ["a"], ["a"])
