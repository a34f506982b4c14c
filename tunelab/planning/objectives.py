"""What a preference objective adds to a run's memory and tokens, for `tunelab plan` and `auto` checkpointing.

    stats = objective_stats(cfg, tokenizer)          # the sequences a step pushes through the model
    extra = objective_bytes(cfg, hf_config, stats, layout, compute_bytes)

- dpo, orpo: each row is two sequences in the batch (prompt + chosen, prompt + rejected);
- kto: each answer is a sequence, and TRL scores as many mismatched (prompt, answer) sequences for its KL term;
- grpo: each prompt is num_generations sequences of prompt + max_completion_length tokens, and generating them
  holds a KV cache for the whole generation batch;
- the reference: dpo and kto precompute its log-probabilities before training (8 bytes a row: nothing to plan),
  so no second copy of the model is ever held; grpo with beta > 0 keeps one for a method that is not an adapter
  (TRL loads it), an adapter's reference being its base with the adapter off.
TRL's trainers use neither tunelab's padding-free batches nor its sparse LM head, so neither is assumed.
"""

from __future__ import annotations

from typing import Any

from tunelab.config import RunConfig
from tunelab.data import preference
from tunelab.data.templates import render_prompt
from tunelab.errors import TunelabError
from tunelab.planning.tokens import TokenStats, assumed_stats, from_lengths


def objective_stats(cfg: RunConfig, tokenizer: Any, rows: list[Any] | None = None) -> TokenStats:
    """The sequences of the objective's training batches, from the data's real token lengths (`rows`: the
    training rows the preflight read; None: read them here)."""
    if rows is None:
        try:
            rows = preference.preflight(cfg).train
        except (TunelabError, OSError) as err:
            return assumed_stats(cfg, f"data not read ({str(err).splitlines()[0]})")
    if not rows:
        return assumed_stats(cfg, "no training rows")

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lengths, trained = [], []
    for row in rows:
        prompt = count(render_prompt(tokenizer, row.prompt, cfg.data.template, cfg.data.system))
        for answer in _answers(cfg, row):
            answer_tokens = cfg.objective.max_completion_length if answer is None else count(answer) + 1  # + EOS
            lengths.append(min(prompt + answer_tokens, cfg.train.max_seq_length))
            trained.append(answer_tokens)
    batch = cfg.train.per_device_train_batch_size * sequences_per_row(cfg)
    return from_lengths(lengths, trained, batch, cfg)


def _answers(cfg: RunConfig, row: Any) -> list[str | None]:
    """A row's sequences' answers (None: a sampled answer, max_completion_length tokens)."""
    if isinstance(row, preference.Pair):
        return [row.chosen, row.rejected]
    if isinstance(row, preference.Judged):
        return [row.completion]
    return [None] * cfg.objective.num_generations


def sequences_per_row(cfg: RunConfig) -> int:
    """Sequences in a step per per_device_train_batch_size unit: pairs are two; kto adds a KL sequence each."""
    return 2 if cfg.objective.name in ("dpo", "orpo", "kto") else 1


def objective_bytes(
    cfg: RunConfig, hf_config: Any, stats: TokenStats, weight_bytes: int, compute_bytes: int, method: str
) -> int:
    """Memory the objective holds beside the training step: grpo's generation KV cache, and a reference copy
    where TRL keeps one (grpo with beta > 0 on a method that is not an adapter)."""
    if cfg.objective.name != "grpo":
        return 0
    layers = hf_config.num_hidden_layers
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    generation_batch = cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps
    cache = generation_batch * stats.longest_row * 2 * layers * kv_heads * head_dim * compute_bytes
    reference = weight_bytes if cfg.objective.beta > 0 and method in ("full", "freeze") else 0
    return cache + reference


def notes(cfg: RunConfig) -> list[str]:
    """What the plan's rows and steps mean under this objective."""
    name = cfg.objective.name
    if name in ("dpo", "orpo"):
        return [f"objective {name}: each pair is two sequences of a step (prompt + chosen, prompt + rejected)"]
    if name == "kto":
        return ["objective kto: each answer is a sequence, plus one mismatched sequence for the KL term"]
    if name == "grpo":
        return [
            f"objective grpo: each prompt is {cfg.objective.num_generations} sampled answers of up to "
            f"{cfg.objective.max_completion_length} tokens; the memory includes their generation KV cache"
        ]
    return []
