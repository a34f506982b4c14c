"""Task metrics: pure functions over generated texts and reference texts, looked up by name.

    from tunelab.evaluation import task_scorer, score_rows, main_metric
    task_scorer("json_fields")(predictions, references)   # {"field_accuracy": 0.83, "valid_json": 1.0, ...}
    score_rows("json_fields", predictions, references)    # one dict per row, for best/worst examples
    main_metric("rougeL")                                  # "rougeL": the key tables and best/worst rows use

Every metric has the same shape, `(predictions: list[str], references: list[str]) -> dict[str, float]`,
so adding one is a function plus one line in `METRICS`, and `score_rows` works for all of them by
scoring each row as a one-row corpus. Each registered function also carries two facts, attached by
`_declare` next to its definition: `headline` (its main key, see `main_metric`) and `row_decomposable`
(True when the corpus score is exactly the mean of the one-row scores; bleu, chrf, f1 and json_fields are
ratios of corpus-wide counts, so they are not, and `bootstrap_ci` re-scores them instead).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

Metric = Callable[[list[str], list[str]], dict[str, float]]

# An opening fence with an optional language tag (```json) and/or a closing fence. Small chat models
# often wrap JSON in a Markdown block even when told not to; that is a formatting slip, not a wrong
# answer, so json_fields forgives it while exact_match (which measures the trained format) does not.
_OPENING_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\n?")
_CLOSING_FENCE = re.compile(r"\n?[ \t]*```\Z")

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _declare(headline: str, row_decomposable: bool) -> Callable[[Metric], Metric]:
    """Attach a metric's headline key and whether its corpus score is the mean of its one-row scores."""

    def mark(metric: Metric) -> Metric:
        metric.headline = headline  # type: ignore[attr-defined]
        metric.row_decomposable = row_decomposable  # type: ignore[attr-defined]
        return metric

    return mark


def is_row_decomposable(metric: Metric) -> bool:
    """True if `metric`'s corpus score is the mean of its one-row scores. Unmarked functions count as
    corpus-level, the safe answer: re-scoring a resample is always right, only slower."""
    return bool(getattr(metric, "row_decomposable", False))


def _check_rows(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references; they must pair up")
    if not references:
        raise ValueError("no rows to score: predictions and references are empty")


@_declare("exact_match", row_decomposable=True)
def exact_match(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Share of rows whose prediction equals the reference, ignoring surrounding whitespace only."""
    _check_rows(predictions, references)
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    return {"exact_match": hits / len(references)}


@_declare("contains", row_decomposable=True)
def contains(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Share of rows whose prediction holds the reference's answer, whatever the wording around it (the "has
    answer" check of open-domain QA): for a JSON-object reference every value, else the whole reference; case
    and runs of whitespace ignored. It credits a right fact in the wrong format, which json_fields does not."""
    _check_rows(predictions, references)
    hits = 0
    for prediction, reference in zip(predictions, references, strict=True):
        found = parse_json_object(reference)
        wanted = [v if isinstance(v, str) else json.dumps(v) for v in found.values()] if found else [reference]
        hits += all(_squeeze(w) in _squeeze(prediction) for w in wanted)
    return {"contains": hits / len(references)}


def _squeeze(text: str) -> str:
    return " ".join(text.lower().split())


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text` (surrounding whitespace and a ``` fence allowed), or None if there is none."""
    body = _CLOSING_FENCE.sub("", _OPENING_FENCE.sub("", text.strip())).strip()
    try:
        value = json.loads(body)
    except ValueError:  # JSONDecodeError, and ValueError for pathological numbers
        return None
    return value if isinstance(value, dict) else None


def _reference_object(text: str, row: int) -> dict[str, Any]:
    value = parse_json_object(text)
    if value is None:
        # A broken reference is a data bug, not a model failure: scoring it as 0 would hide it.
        raise ValueError(f"reference row {row} is not a JSON object: {text[:80]!r}")
    return value


@_declare("field_accuracy", row_decomposable=False)
def json_fields(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Per-field accuracy of JSON-object predictions against JSON-object references.

    Each key of a reference is a field; a prediction that is not a JSON object scores 0 on all of them.
    `field_accuracy` is the share of correct (row, field) pairs; `field_accuracy.<key>` is the share
    of rows (among those whose reference has that key) where the prediction has the same value.
    """
    _check_rows(predictions, references)
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    invalid = 0
    for row, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        expected = _reference_object(reference, row)
        got = parse_json_object(prediction)
        invalid += got is None
        for key, value in expected.items():
            total[key] = total.get(key, 0) + 1
            correct[key] = correct.get(key, 0) + int(got is not None and key in got and got[key] == value)
    pairs = sum(total.values())
    scores = {
        "field_accuracy": sum(correct.values()) / pairs if pairs else 0.0,
        "valid_json": 1 - invalid / len(references),
        "invalid_json_count": float(invalid),
    }
    scores.update({f"field_accuracy.{key}": correct[key] / total[key] for key in total})
    return scores


@functools.cache
def _rouge_scorer(types: tuple[str, ...]) -> Any:
    # Imported here because rouge-score pulls in nltk (~0.5 s), which only ROUGE users should pay for.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), use_stemmer=True)


def _rouge_means(predictions: list[str], references: list[str], types: tuple[str, ...]) -> dict[str, float]:
    """Mean over rows of each ROUGE type's precision, recall and F1, as `<type>_p`, `<type>_r`, `<type>_f`."""
    _check_rows(predictions, references)
    scorer = _rouge_scorer(types)
    sums = {f"{t}_{part}": 0.0 for t in types for part in "prf"}
    for prediction, reference in zip(predictions, references, strict=True):
        for t, score in scorer.score(reference, prediction).items():  # (target, prediction) order
            sums[f"{t}_p"] += score.precision
            sums[f"{t}_r"] += score.recall
            sums[f"{t}_f"] += score.fmeasure
    return {key: float(total / len(references)) for key, total in sums.items()}


@_declare("rougeL_f", row_decomposable=True)
def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L (whole-text LCS) precision, recall and F1, averaged over rows.

    Uses rouge-score with its Porter stemmer. Its tokenizer lowercases and keeps only ASCII letters and
    digits, so text in other scripts scores 0: use chrf for those.
    """
    return _rouge_means(predictions, references, ROUGE_TYPES)


def _rouge_single(kind: str) -> Metric:
    """The metric for one ROUGE type: `<kind>` (its F1, so it can be a headline) plus `<kind>_p`, `<kind>_r`."""

    def metric(predictions: list[str], references: list[str]) -> dict[str, float]:
        scores = _rouge_means(predictions, references, (kind,))
        return {kind: scores[f"{kind}_f"], f"{kind}_p": scores[f"{kind}_p"], f"{kind}_r": scores[f"{kind}_r"]}

    metric.__name__ = metric.__qualname__ = kind
    metric.__doc__ = f"{kind} F1 (key `{kind}`), precision and recall, averaged over rows; see `rouge`."
    return _declare(kind, row_decomposable=True)(metric)


@_declare("bleu", row_decomposable=False)
def bleu(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU from sacrebleu with its defaults (13a tokenization, exp smoothing, one reference per row),
    on sacrebleu's 0-100 scale, not 0-1. Corpus-level: n-gram counts are pooled over rows before dividing."""
    _check_rows(predictions, references)
    from sacrebleu.metrics import BLEU  # sacrebleu is only needed by bleu and chrf

    return {"bleu": float(BLEU().corpus_score(predictions, [references]).score)}


@_declare("chrf", row_decomposable=False)
def chrf(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus chrF (character 1-6-grams, beta 2, whitespace ignored) from sacrebleu, on its 0-100 scale.
    Corpus-level like bleu; unlike ROUGE it works for any script and credits partly right words."""
    _check_rows(predictions, references)
    from sacrebleu.metrics import CHRF

    return {"chrf": float(CHRF().corpus_score(predictions, [references]).score)}


@_declare("accuracy", row_decomposable=True)
def accuracy(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Classification accuracy: share of rows whose stripped prediction equals the stripped reference label
    (case-sensitive; anything else, including an unknown label, is wrong). Per-class scores are in `f1`."""
    return {"accuracy": exact_match(predictions, references)["exact_match"]}


@_declare("f1", row_decomposable=False)
def f1(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Macro-F1 over the reference labels, with `accuracy` and per-class `precision.<label>`, `recall.<label>`,
    `f1.<label>`. Labels are compared stripped and case-sensitive.

    The classes are the distinct reference labels. A prediction that is none of them is wrong: a miss for
    its row's class (lowers that class's recall) but no class's false positive, as if it were one extra
    "other" class that macro-F1 does not average over (scikit-learn's `labels=` behaviour). A class that is
    never predicted has precision 0 (scikit-learn's zero_division=0).
    """
    _check_rows(predictions, references)
    preds = [p.strip() for p in predictions]
    refs = [r.strip() for r in references]
    # One pass of counting, not one per class: references may hold thousands of distinct labels.
    hits = Counter(r for p, r in zip(preds, refs, strict=True) if p == r)
    predicted, actual = Counter(preds), Counter(refs)
    scores = {"accuracy": hits.total() / len(refs)}
    class_f1 = []
    for label in sorted(actual):
        precision = hits[label] / predicted[label] if predicted[label] else 0.0
        recall = hits[label] / actual[label]
        class_f1.append(2 * precision * recall / (precision + recall) if hits[label] else 0.0)
        scores.update({f"precision.{label}": precision, f"recall.{label}": recall, f"f1.{label}": class_f1[-1]})
    scores["f1"] = sum(class_f1) / len(class_f1)
    return scores


METRICS: dict[str, Metric] = {
    "exact_match": exact_match,
    "contains": contains,
    "json_fields": json_fields,
    "rouge": rouge,
    **{kind: _rouge_single(kind) for kind in ROUGE_TYPES},
    "bleu": bleu,
    "chrf": chrf,
    "accuracy": accuracy,
    "f1": f1,
}


def task_scorer(name: str) -> Metric:
    """The metric registered under `name`; an unknown name is a ValueError that lists the valid ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(sorted(METRICS))}") from None


def unknown_metrics(names: list[str], where: str = "--metrics") -> list[str]:
    """A problem line for each name that is no metric, with the nearest one: checked before any model loads."""
    problems = []
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(name, list(METRICS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{where}: unknown metric {name!r}; {hint}valid metrics: {', '.join(sorted(METRICS))}")
    return problems


def main_metric(name: str) -> str:
    """The headline key metric `name` produces (json_fields -> "field_accuracy", rouge -> "rougeL_f",
    rougeL -> "rougeL"): the key for tables, best/worst rows and `metric_for_best_model`. Higher is better."""
    return task_scorer(name).headline  # type: ignore[attr-defined]


def score_rows(metric: str | Metric, predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-row scores: `metric` (a name or a registered function) applied to each row on its own."""
    scorer = task_scorer(metric) if isinstance(metric, str) else metric
    _check_rows(predictions, references)
    return [scorer([p], [r]) for p, r in zip(predictions, references, strict=True)]
