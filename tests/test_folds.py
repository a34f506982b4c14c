"""K-fold splits for cross-validation: deterministic for a seed, every row validated once, stratified by label,
and impossible fold counts named before anything loads."""

from __future__ import annotations

from collections import Counter

import pytest

from tunelab.data.folds import fold_problems, k_folds
from tunelab.errors import ConfigError


@pytest.mark.parametrize("n_rows,k", [(10, 2), (23, 5), (7, 7)])
def test_every_row_is_validated_exactly_once_and_trains_in_every_other_fold(n_rows, k):
    folds = k_folds(n_rows, k, seed=3)
    assert [f.number for f in folds] == list(range(1, k + 1))
    validated = sorted(i for f in folds for i in f.validation)
    assert validated == list(range(n_rows))
    for fold in folds:
        assert sorted(fold.train + fold.validation) == list(range(n_rows))
        assert len(fold.validation) in (n_rows // k, n_rows // k + 1)


def test_the_same_seed_gives_the_same_folds_and_another_seed_others():
    assert k_folds(40, 4, seed=7) == k_folds(40, 4, seed=7)
    assert k_folds(40, 4, seed=7) != k_folds(40, 4, seed=8)


def test_folds_keep_each_label_s_share():
    labels = ["spam"] * 30 + ["ham"] * 12 + ["eggs"] * 6  # 62.5% / 25% / 12.5%
    for fold in k_folds(len(labels), 3, seed=0, labels=labels):
        counts = Counter(labels[i] for i in fold.validation)
        assert counts == {"spam": 10, "ham": 4, "eggs": 2}
    unstratified = [Counter(labels[i] for i in f.validation) for f in k_folds(len(labels), 3, seed=0)]
    assert any(c != {"spam": 10, "ham": 4, "eggs": 2} for c in unstratified)  # the check above can fail


@pytest.mark.parametrize(
    "n_rows,k,labels,says",
    [
        (5, 1, None, "--folds 1: use 2 or more"),
        (5, 6, None, "--folds 6: more folds than rows (5); use at most 5"),
        (6, 3, ["a"] * 4 + ["b"] * 2, "the label 'b' has 2 row(s), fewer than the folds"),
    ],
)
def test_an_impossible_fold_count_is_one_line(n_rows, k, labels, says):
    assert says in fold_problems(n_rows, k, labels)[0]
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        k_folds(n_rows, k, seed=0, labels=labels)
