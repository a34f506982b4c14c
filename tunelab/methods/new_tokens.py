"""New vocabulary rows (`data.new_tokens`): grown into the embeddings, started at their pieces' mean, trained.

    model = add_token_rows(model, added.pieces)         # before the method wraps the model
    model = train_token_rows(method.prepare(model, ...), added.pieces)
    fit_vocabulary(base, len(run_tokenizer))            # loading a run back: the base grown to the run's vocabulary

Why the mean of the pieces: the new token then starts where the model already puts the term (the average of what
its pieces mean), not at a random point it has never seen; the rows still need training, since no single mean
equals the sequence. For the output side (the LM head; the same matrix when the embeddings are tied), the mean of
the pieces' rows gives the new token a logit about the mean of its pieces' logits.

With LoRA the base is frozen, so the new rows train through peft's trainable tokens (`trainable_token_indices`):
only those rows train and are saved with the adapter (60 rows of SmolLM2: 138 KB; the whole grown matrix is 28M
values), every old row stays bit for bit the base's.
With full fine-tuning the whole matrix trains anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def add_token_rows(model: nn.Module, pieces: dict[int, list[int]]) -> nn.Module:
    """Grow the input (and untied output) embeddings to hold the new token ids, each new row the mean of the rows
    of its old pieces. No new tokens: the model as it is."""
    if not pieces:
        return model
    fit_vocabulary(model, max(pieces) + 1)
    with torch.no_grad():
        for weight in embedding_matrices(model):
            for new_id, old_ids in pieces.items():
                weight[new_id] = weight[old_ids].float().mean(0).to(weight.dtype)
    return model


def fit_vocabulary(model: nn.Module, n_tokens: int) -> nn.Module:
    """Grow the embeddings to `n_tokens` rows where they have fewer (a vocabulary padded beyond the tokenizer, as
    some models ship, already has room). Each added row is the mean of the old rows: a run's adapter replaces them
    (peft's trainable tokens), and where it is switched off (`tunelab serve`'s base model) the base gives such a
    token about the average logit, so its outputs barely change (https://nlp.stanford.edu/~johnhew/vocab-expansion.html)."""
    n_old = model.get_input_embeddings().weight.shape[0]
    if n_old >= n_tokens:
        return model
    # mean_resizing=False: transformers' default draws the rows from the old rows' covariance (random, and slow on
    # a large vocabulary); the plain mean is set below instead.
    model.resize_token_embeddings(n_tokens, mean_resizing=False)
    with torch.no_grad():
        for weight in embedding_matrices(model):
            weight[n_old:] = weight[:n_old].float().mean(0).to(weight.dtype)
    return model


def embedding_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The input embedding matrix, and the LM head's when it is not the same tensor (untied)."""
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not weights[0]:
        weights.append(output.weight)
    return weights


def train_token_rows(model: nn.Module, pieces: dict[int, list[int]]) -> nn.Module:
    """Make the new rows train. A LoRA model (peft): those rows only, as peft's trainable tokens of its adapter,
    in fp32 like its other adapter weights. Any other model must train its input embeddings already (full)."""
    if not pieces:
        return model
    ids = sorted(pieces)
    if hasattr(model, "peft_config"):
        return peft_token_rows(model, ids)
    if not model.get_input_embeddings().weight.requires_grad:
        raise ValueError(
            "data.new_tokens: the method leaves the input embeddings frozen (preflight lets only lora, "
            "qlora and full through)"
        )
    return model


def peft_token_rows(model: Any, ids: list[int]) -> Any:
    """peft's trainable tokens on the model's active adapter: the same wrapping `get_peft_model` does for a
    LoraConfig with trainable_token_indices, which the adapter's saved config then carries, so loading the adapter
    (PeftModel.from_pretrained) rebuilds it."""
    from peft.tuners.tuners_utils import BaseTuner, cast_adapter_dtype
    from peft.utils import set_additional_trainable_modules

    name = model.active_adapter
    config = model.peft_config[name]
    base = model.get_base_model()
    tied = base.get_output_embeddings() is None or (
        base.get_output_embeddings().weight is base.get_input_embeddings().weight
    )
    # Tied: the input rows only (peft ties the LM head's rows to them). Untied: each matrix its own rows.
    config.trainable_token_indices = (
        ids if tied else {embedding_name(base, output=False): ids, embedding_name(base, output=True): ids}
    )
    set_additional_trainable_modules(base, config, BaseTuner.get_model_config(base), name)
    cast_adapter_dtype(model, name)  # a bf16 base would otherwise train the rows in bf16
    return model


def embedding_name(model: nn.Module, output: bool) -> str:
    """The last part of the embedding module's name (peft matches modules by it): embed_tokens, lm_head, ..."""
    target = model.get_output_embeddings() if output else model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is target).rsplit(".", 1)[-1]


def trains_token_rows(model: nn.Module) -> bool:
    """The model is a peft model whose adapter trains token rows (saved with it; the rest of the matrix is not)."""
    configs = getattr(model, "peft_config", {})
    return any(getattr(c, "trainable_token_indices", None) for c in configs.values())
