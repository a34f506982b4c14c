"""Generation metrics at every evaluation during training, so `metric_for_best_model: rougeL` (or
accuracy, f1, exact_match, field_accuracy) picks the best checkpoint and drives early stopping.

Generation is costly, so a capped, fixed subset of the validation rows is used (eval.during_training_rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunelab.config import RunConfig
from tunelab.evaluation.metrics import main_metric
from tunelab.evaluation.predict import score
from tunelab.inference.generation import Decoding, generate

LOSS_METRICS = ("loss", "eval_loss")
PROBE_METRICS = ("probe_accuracy", "probe_perplexity")  # with forgetting.at_each_evaluation


def wanted(cfg: RunConfig) -> bool:
    selected = cfg.train.metric_for_best_model.removeprefix("eval_")
    return cfg.eval.during_training or selected in generation_metrics(cfg)


def generation_metrics(cfg: RunConfig) -> list[str]:
    return [main_metric(name) for name in cfg.eval.metrics]


def selectable_metrics(cfg: RunConfig) -> list[str]:
    """What metric_for_best_model may name: the losses, the headline key of every eval.metrics entry and,
    when the probe runs at each evaluation, its scores."""
    probe = cfg.forgetting.enabled and cfg.forgetting.at_each_evaluation
    return [*LOSS_METRICS, *generation_metrics(cfg), *(PROBE_METRICS if probe else ())]


def evaluator(cfg: RunConfig, tokenizer: Any, validation_rows: list) -> Callable[[Any], dict[str, float]] | None:
    """A function model → generation metrics on the capped validation subset, or None when not wanted."""
    if not wanted(cfg) or not validation_rows:
        return None
    rows = validation_rows[: cfg.eval.during_training_rows]
    prompts = [row.messages[:-1] for row in rows]
    references = [row.messages[-1]["content"] for row in rows]
    decoding = Decoding(max_new_tokens=cfg.eval.max_new_tokens)

    def evaluate(model: Any) -> dict[str, float]:
        outputs = generate(
            model,
            tokenizer,
            prompts,
            decoding,
            batch_size=cfg.eval.batch_size,
            template=cfg.data.template,
            system=cfg.data.system,
        )
        return score(outputs, references, cfg.eval.metrics)

    return evaluate
