"""`prompt_tuning` and `prefix_tuning`: soft prompts through peft; the model itself stays frozen.

prompt_tuning trains `num_virtual_tokens` input embeddings put before every input; prefix_tuning trains
key/value prefixes for every layer's attention. Neither can be merged into the weights: a run is served
as base + adapter.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tunelab.config.methods import PrefixTuningMethod, PromptTuningMethod
from tunelab.methods.base import MethodSpec, frozen_base_dtype, peft_task_type


def prepare_prompt(model: nn.Module, method_cfg: PromptTuningMethod, tokenizer: Any = None) -> nn.Module:
    # Imported here, not at the top: peft (and bitsandbytes behind it) takes ~4 s to import, which
    # `tunelab generate` on a plain model or a merged run must not pay.
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(num_virtual_tokens=method_cfg.num_virtual_tokens, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    if method_cfg.init_text:
        init_from_text(peft_model, tokenizer, method_cfg.init_text, method_cfg.num_virtual_tokens)
    return peft_model


def init_from_text(peft_model: Any, tokenizer: Any, text: str, n_tokens: int) -> None:
    """The soft prompt starts as the embeddings of `text`, repeated or cut to n_tokens, as peft's TEXT init
    does. Ours because peft's reloads the tokenizer by name, which fails for a tokenizer read from a GGUF
    or a local-only model; we have the tokenizer in hand."""
    ids = _text_ids(tokenizer, text, n_tokens)
    embeddings = peft_model.get_base_model().get_input_embeddings()
    with torch.no_grad():
        vectors = embeddings(torch.tensor(ids, device=embeddings.weight.device))
        prompt = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
        prompt.copy_(vectors.to(prompt.dtype))


def prepare_prefix(model: nn.Module, method_cfg: PrefixTuningMethod, tokenizer: Any = None) -> nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        num_virtual_tokens=method_cfg.num_virtual_tokens,
        prefix_projection=method_cfg.projection,
        task_type=peft_task_type(model),
    )
    peft_model = get_peft_model(model, config)
    # Decoder-only models: an encoder-decoder's or a classifier's forward returns no such cache.
    if method_cfg.init_text and not method_cfg.projection and config.task_type == "CAUSAL_LM":
        init_prefix_from_text(peft_model, tokenizer, method_cfg.init_text, method_cfg.num_virtual_tokens)
    return peft_model


def init_prefix_from_text(peft_model: Any, tokenizer: Any, text: str, n_tokens: int) -> None:
    """The prefix starts as the keys and values the frozen model itself computes for `text` (repeated or cut to
    n_tokens), so training starts near the base model instead of from random attention targets. peft has no
    such init for prefixes. Its embedding row per virtual token is [layer][key|value][kv head][head dim]."""
    ids = _text_ids(tokenizer, text, n_tokens)
    base = peft_model.get_base_model()
    prefix = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    with torch.no_grad():
        cache = base(input_ids=torch.tensor([ids], device=prefix.device), use_cache=True).past_key_values
        per_layer = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]  # [2, heads, n, dim]
        rows = torch.stack(per_layer).permute(3, 0, 1, 2, 4)  # [n, layers, 2, heads, dim]
        prefix.copy_(rows.reshape(n_tokens, -1).to(prefix.dtype))


def _text_ids(tokenizer: Any, text: str, n_tokens: int) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("method.init_text has no tokens")
    return (ids * math.ceil(n_tokens / len(ids)))[:n_tokens]


PROMPT_TUNING = MethodSpec(
    name="prompt_tuning",
    artifact="adapter",
    load_dtype=frozen_base_dtype,
    prepare=prepare_prompt,
    capability=70,
    sparse_head=False,
    padding_free=False,
    virtual_tokens=lambda method_cfg: method_cfg.num_virtual_tokens,
)
PREFIX_TUNING = MethodSpec(
    name="prefix_tuning",
    artifact="adapter",
    load_dtype=frozen_base_dtype,
    prepare=prepare_prefix,
    capability=60,
    sparse_head=False,
    padding_free=False,
)
