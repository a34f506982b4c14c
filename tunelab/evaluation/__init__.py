"""Evaluation: task metrics (the METRICS registry) and their bootstrap intervals.

Likelihood scoring (perplexity, multiple choice) lives in `tunelab.evaluation.likelihood`, imported on its own
so that scoring texts does not pull in torch.
"""

from tunelab.evaluation.bootstrap import bootstrap_ci
from tunelab.evaluation.metrics import (
    METRICS,
    Metric,
    accuracy,
    bleu,
    chrf,
    exact_match,
    f1,
    is_row_decomposable,
    json_fields,
    main_metric,
    parse_json_object,
    rouge,
    score_rows,
    task_scorer,
)

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "bleu",
    "bootstrap_ci",
    "chrf",
    "exact_match",
    "f1",
    "is_row_decomposable",
    "json_fields",
    "main_metric",
    "parse_json_object",
    "rouge",
    "score_rows",
    "task_scorer",
]
