"""Facts about tasks: the kind of model a config or a loaded model is, and its transformers Auto class.

task_of(config)              # "causal_lm" | "sequence_classification" | "seq2seq"
auto_class("seq2seq")        # transformers.AutoModelForSeq2SeqLM
(models.loading.resolve_task reads a model's config to apply these to `model.name`.)
"""

from __future__ import annotations

from typing import Any

CAUSAL_LM, CLASSIFIER, SEQ2SEQ = "causal_lm", "sequence_classification", "seq2seq"
# Encoder-only architectures: they have no LM head to generate with; a classification head goes on top.
ENCODER_TYPES = {
    "albert", "bert", "camembert", "deberta", "deberta-v2", "distilbert", "electra", "ernie", "modernbert",
    "mpnet", "roberta", "xlm-roberta",
}  # fmt: skip
AUTO_CLASSES = {
    CAUSAL_LM: "AutoModelForCausalLM",
    CLASSIFIER: "AutoModelForSequenceClassification",
    SEQ2SEQ: "AutoModelForSeq2SeqLM",
}


def task_of(config: Any) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ
    if getattr(config, "model_type", None) in ENCODER_TYPES:
        return CLASSIFIER
    return CAUSAL_LM


def auto_class(task: str) -> Any:
    import transformers

    return getattr(transformers, AUTO_CLASSES[task])


def model_task(model: Any) -> str:
    """The task of a loaded model (peft-wrapped or not), from its class."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(inner).__name__
    if name.endswith("ForSequenceClassification"):
        return CLASSIFIER
    return SEQ2SEQ if getattr(inner.config, "is_encoder_decoder", False) else CAUSAL_LM
