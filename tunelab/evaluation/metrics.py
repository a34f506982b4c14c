"""Task metrics: pure functions over generated texts and reference texts, looked up by name.

    from tunelab.evaluation import task_scorer, score_rows
    task_scorer("json_fields")(predictions, references)   # {"field_accuracy": 0.83, "valid_json": 1.0, ...}
    score_rows("json_fields", predictions, references)    # one dict per row, for best/worst examples

Every metric has the same shape, `(predictions: list[str], references: list[str]) -> dict[str, float]`,
so adding one is a function plus one line in `METRICS`, and `score_rows` works for all of them by
scoring each row as a one-row corpus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

Metric = Callable[[list[str], list[str]], dict[str, float]]

# An opening fence with an optional language tag (```json) and/or a closing fence. Small chat models
# often wrap JSON in a Markdown block even when told not to; that is a formatting slip, not a wrong
# answer, so json_fields forgives it while exact_match (which measures the trained format) does not.
_OPENING_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\n?")
_CLOSING_FENCE = re.compile(r"\n?[ \t]*```\Z")


def _check_rows(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references; they must pair up")
    if not references:
        raise ValueError("no rows to score: predictions and references are empty")


def exact_match(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Share of rows whose prediction equals the reference, ignoring surrounding whitespace only."""
    _check_rows(predictions, references)
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    return {"exact_match": hits / len(references)}


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


METRICS: dict[str, Metric] = {
    "exact_match": exact_match,
    "json_fields": json_fields,
}


def task_scorer(name: str) -> Metric:
    """The metric registered under `name`; an unknown name is a ValueError that lists the valid ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(sorted(METRICS))}") from None


def score_rows(metric: str | Metric, predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-row scores: `metric` (a name or a registered function) applied to each row on its own."""
    scorer = task_scorer(metric) if isinstance(metric, str) else metric
    _check_rows(predictions, references)
    return [scorer([p], [r]) for p, r in zip(predictions, references, strict=True)]
