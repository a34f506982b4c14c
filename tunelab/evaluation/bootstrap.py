"""Bootstrap confidence intervals for any task metric, so a before/after difference can be told from noise.

    from tunelab.evaluation import bootstrap_ci
    bootstrap_ci("rougeL", predictions, references)   # {"rougeL": (0.41, 0.47), "rougeL_p": (...), ...}

Rows are resampled with replacement and the metric is recomputed on each resample; the interval is the
percentile interval of those recomputed scores (Efron's percentile bootstrap). For a row-decomposable metric
(see `is_row_decomposable`) the per-row scores are computed once and only their mean is resampled, which
costs milliseconds; corpus-level metrics (bleu, chrf, f1, json_fields) are re-scored on every resample,
so they default to 200 resamples instead of 1000: enough for a 95% interval to two significant digits,
at a fifth of the cost.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tunelab.evaluation.metrics import Metric, is_row_decomposable, score_rows, task_scorer

ROW_RESAMPLES = 1000
CORPUS_RESAMPLES = 200


def bootstrap_ci(
    metric_fn: str | Metric,
    predictions: list[str],
    references: list[str],
    n_resamples: int | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """For every key `metric_fn` returns on the full set, its (low, high) percentile bootstrap interval.

    `metric_fn` is a registered name or a metric function. `n_resamples` defaults to ROW_RESAMPLES for
    row-decomposable metrics and CORPUS_RESAMPLES for corpus-level ones. A key missing from some resamples
    (a per-class score whose class was not drawn) gets its interval from the resamples that have it, and
    (nan, nan) if none do. The same seed gives the same intervals.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples is not None and n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    scorer = task_scorer(metric_fn) if isinstance(metric_fn, str) else metric_fn
    keys = list(scorer(predictions, references))  # also validates the rows
    rng = np.random.default_rng(seed)
    if is_row_decomposable(scorer):
        samples = _row_mean_samples(scorer, predictions, references, keys, n_resamples or ROW_RESAMPLES, rng)
    else:
        samples = _rescored_samples(scorer, predictions, references, keys, n_resamples or CORPUS_RESAMPLES, rng)
    tail = 100 * (1 - confidence) / 2
    return {key: _percentile_interval(samples[:, i], tail) for i, key in enumerate(keys)}


def mean_interval(
    values: list[float], n_resamples: int = ROW_RESAMPLES, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of per-row values (a share, when they are 0/1)."""
    if not values:
        return (float("nan"), float("nan"))
    table = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([table[idx].mean() for idx in _resamples(rng, len(table), n_resamples)])
    return _percentile_interval(means, 100 * (1 - confidence) / 2)


def _resamples(rng: np.random.Generator, n_rows: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Row indices of each resample: `n_rows` draws with replacement. One generator for both paths, so a
    seed picks the same resamples whichever way the metric is recomputed."""
    for _ in range(n_resamples):
        yield rng.integers(0, n_rows, size=n_rows)


def _row_mean_samples(
    scorer: Metric, predictions: list[str], references: list[str], keys: list[str], n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, len(keys)) resampled means of the per-row scores, which are computed once."""
    rows = score_rows(scorer, predictions, references)
    if any(row.keys() != set(keys) for row in rows):
        raise ValueError("a metric marked row-decomposable must return the same keys for every row")
    table = np.array([[row[key] for key in keys] for row in rows], dtype=np.float64)
    return np.stack([table[idx].mean(axis=0) for idx in _resamples(rng, len(rows), n)])


def _rescored_samples(
    scorer: Metric, predictions: list[str], references: list[str], keys: list[str], n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, len(keys)) scores of the metric re-run on each resample; nan where a resample lacks a key."""
    samples = np.full((n, len(keys)), np.nan)
    for s, idx in enumerate(_resamples(rng, len(references), n)):
        scores = scorer([predictions[i] for i in idx], [references[i] for i in idx])
        samples[s] = [scores.get(key, np.nan) for key in keys]
    return samples


def _percentile_interval(values: np.ndarray, tail: float) -> tuple[float, float]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.percentile(present, [tail, 100 - tail])
    return (float(low), float(high))
