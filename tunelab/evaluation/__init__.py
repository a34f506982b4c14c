"""Evaluation: task metrics (the METRICS registry) and, later, generation and comparison arms."""

from tunelab.evaluation.metrics import (
    METRICS,
    Metric,
    exact_match,
    json_fields,
    parse_json_object,
    score_rows,
    task_scorer,
)

__all__ = [
    "METRICS",
    "Metric",
    "exact_match",
    "json_fields",
    "parse_json_object",
    "score_rows",
    "task_scorer",
]
