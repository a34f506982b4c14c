"""Generate predictions for evaluation examples and score them with registered metrics.

outputs = predict(loaded, examples)                 # greedy, batched, with a progress bar
scores = score(outputs, [e.reference for e in examples], ["exact_match", "json_fields"])
"""

from __future__ import annotations

from typing import Any

from tunelab.evaluation.metrics import task_scorer
from tunelab.inference.generation import Decoding, generate
from tunelab.models.tasks import CLASSIFIER, model_task

# Evaluation decodes greedily so that two arms differ by their model, not by sampling luck. 48 new tokens
# hold twice the longest demo answer; a model that rambles past that is wrong either way.
EVAL_DECODING = Decoding(max_new_tokens=48, temperature=0.0)


def predict(loaded: Any, examples: list[Any], decoding: Decoding = EVAL_DECODING, batch_size: int = 16) -> list[str]:
    """Greedy answers; for an encoder classifier, the predicted label of each example's text."""
    if model_task(loaded.model) == CLASSIFIER:
        from tunelab.data.classifier import classify

        return classify(loaded.model, loaded.tokenizer, [e.fields["text"] for e in examples], batch_size)
    return generate(
        loaded.model,
        loaded.tokenizer,
        [e.messages for e in examples],
        decoding,
        batch_size=batch_size,
        template=loaded.template,
        system=loaded.system,
        progress=True,
    )


def score(predictions: list[str], references: list[str], metric_names: list[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name in metric_names:
        scores.update(task_scorer(name)(predictions, references))
    return scores
