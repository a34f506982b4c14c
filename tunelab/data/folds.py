"""K-fold splits of training rows, for cross-validation on small data (issue 21's `tunelab cv` builds on them).

scikit-learn's KFold / StratifiedKFold with a seeded shuffle: the same rows, k and seed give the same folds on any
machine, every row is in exactly one validation fold, and with labels (classification) each fold keeps the label
shares of the whole set as closely as whole rows allow.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

from tunelab.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    number: int  # 1-based, as the sub-run directories are named
    train: list[int]  # row indices
    validation: list[int]


def fold_problems(n_rows: int, k: int, labels: list[str] | None = None) -> list[str]:
    """What makes `k` folds of these rows impossible, as one line each (checked before any model loads)."""
    if k < 2:
        return [f"--folds {k}: use 2 or more (each fold trains on the others)"]
    if k > n_rows:
        return [f"--folds {k}: more folds than rows ({n_rows}); use at most {n_rows}"]
    if labels is not None:
        rarest, count = min(Counter(labels).items(), key=lambda item: (item[1], item[0]))
        if count < k:
            return [
                f"--folds {k}: the label {rarest!r} has {count} row(s), fewer than the folds, so some validation "
                f"folds would lack it; use --folds {max(count, 2)} or fewer, or add rows of it"
            ]
    return []


def k_folds(n_rows: int, k: int, seed: int, labels: list[str] | None = None) -> list[Fold]:
    """`k` folds of rows 0..n_rows-1, stratified by `labels` when given."""
    problems = fold_problems(n_rows, k, labels)
    if problems:
        raise ConfigError(problems[0], problems[1:])
    from sklearn.model_selection import KFold, StratifiedKFold  # ~0.4 s; only where folds are made

    rows = list(range(n_rows))
    if labels is None:
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(rows)
    else:
        with warnings.catch_warnings():  # fold_problems already named a label too rare for the folds
            warnings.simplefilter("ignore", UserWarning)
            splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, labels))
    return [Fold(i, sorted(map(int, train)), sorted(map(int, val))) for i, (train, val) in enumerate(splits, 1)]
