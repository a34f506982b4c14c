"""Likelihood scoring with any Hugging Face causal LM: perplexity and multiple-choice accuracy, no generation.

    from tunelab.evaluation.likelihood import perplexity, perplexity_from_examples, multiple_choice, MCItem
    perplexity(model, tokenizer, ["some held-out text", ...])          # {"perplexity": 12.3, "nll_per_token": ...}
    perplexity_from_examples(model, validation_rows)                   # rows with input_ids + labels (-100 masked)
    multiple_choice(model, tokenizer, [MCItem("2+2=?", ["3", "4"], 1)]).accuracy

All scores are token-weighted sums of log-probabilities computed in batches on the model's device, in
eval mode, without gradients. Batches are right-padded with an attention mask; causal attention means
padding after a sequence cannot change its scores, so batched results equal one-by-one results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.evaluation.probes import MCItem  # one question type for the shipped probe and for scoring
from tunelab.inference.generation import eval_mode

IGNORE_INDEX = -100  # the label value Hugging Face losses skip
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class MCResult:
    """Multiple-choice scores. `loglikelihoods[i][j]` is the summed log-probability of item i's choice j
    continuation; `chosen` is its argmax, `chosen_norm` the argmax per character of continuation."""

    accuracy: float
    acc_norm: float
    chosen: list[int]
    chosen_norm: list[int]
    loglikelihoods: list[list[float]]


def perplexity(
    model: Any, tokenizer: Any, texts: list[str], batch_size: int = 8, max_length: int = 1024
) -> dict[str, float]:
    """Token-weighted perplexity of `texts`: exp(total NLL / total predicted tokens), not a mean of per-text
    perplexities (which would let short texts dominate).

    Each text is tokenized as the tokenizer does by default (SmolLM2's adds no BOS, so a text's first token is
    context only) and cut to `max_length` tokens; `truncated` counts the texts that were cut.
    """
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    examples = [{"input_ids": ids[:max_length], "labels": ids[:max_length]} for ids in encoded]
    scores = perplexity_from_examples(model, examples, batch_size)
    return {**scores, "truncated": sum(len(ids) > max_length for ids in encoded)}


def perplexity_from_examples(
    model: Any, examples: Sequence[Mapping[str, Any]], batch_size: int = 8
) -> dict[str, float]:
    """Perplexity over tokenized examples (`input_ids` and same-length `labels`, -100 where not scored), the
    rows a run trains and validates on. Label i is predicted from tokens before i, as in the models' own loss,
    so `nll_per_token` equals the Trainer's eval_loss when the eval set is one batch. Over several batches the
    Trainer averages each batch's token mean weighted by its rows (transformers Trainer.evaluation_loop), which
    drifts from this token-weighted figure when batches hold different numbers of label tokens.
    """
    sequences = [(list(ex["input_ids"]), list(ex["labels"])) for ex in examples]
    for row, (ids, labels) in enumerate(sequences):
        if len(ids) != len(labels):
            raise ValueError(f"example {row}: {len(ids)} input_ids but {len(labels)} labels")
    per_sequence = _sequence_nll(model, sequences, batch_size)
    tokens = sum(count for _, count in per_sequence)
    if tokens == 0:
        raise ValueError("no tokens to score: every label is -100 (or every text is a single token)")
    nll = sum(total for total, _ in per_sequence) / tokens
    return {"perplexity": math.exp(nll), "nll_per_token": nll, "tokens": tokens}


def _letters_prompt(item: MCItem) -> tuple[str, list[str]]:
    """MMLU-style: the question, lettered choices and "Answer:", continued by " A", " B", ..."""
    if len(item.choices) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} choices can be lettered, got {len(item.choices)}")
    lines = [item.question, *(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)), "Answer:"]
    return "\n".join(lines), [f" {LETTERS[i]}" for i in range(len(item.choices))]


def _choice_text_prompt(item: MCItem) -> tuple[str, list[str]]:
    """HellaSwag/ARC-style: the question and "Answer:", continued by each choice's own text."""
    return f"{item.question}\nAnswer:", [f" {choice}" for choice in item.choices]


MC_STYLES: dict[str, Callable[[MCItem], tuple[str, list[str]]]] = {
    "letters": _letters_prompt,
    "choice_text": _choice_text_prompt,
}


def multiple_choice(
    model: Any, tokenizer: Any, items: list[MCItem], batch_size: int = 8, style: str = "letters"
) -> MCResult:
    """Score every choice by the summed log-probability of its continuation tokens given the prompt and pick
    the argmax. `style` is "letters" (continuations " A", " B", ...) or "choice_text" (the choices' text);
    `acc_norm` divides by the continuation's length in characters (lm-evaluation-harness's acc_norm), which
    matters only for choice_text: lettered continuations all have the same length.
    """
    if style not in MC_STYLES:
        raise ValueError(f"unknown multiple-choice style {style!r}; valid styles: {', '.join(MC_STYLES)}")
    if not items:
        raise ValueError("no multiple-choice items to score")
    sequences, lengths = [], []
    for row, item in enumerate(items):
        if len(item.choices) < 2 or not 0 <= item.answer < len(item.choices):
            raise ValueError(f"item {row}: needs 2+ choices and 0 <= answer < {len(item.choices)}, got {item}")
        prompt, continuations = MC_STYLES[style](item)
        for continuation in continuations:
            context, scored = encode_continuation(tokenizer, prompt, continuation)
            sequences.append((context + scored, [IGNORE_INDEX] * len(context) + scored))
            lengths.append(len(continuation))
    flat = iter(-nll for nll, _ in _sequence_nll(model, sequences, batch_size))
    loglikelihoods = [[next(flat) for _ in item.choices] for item in items]
    lengths_by_item = iter(lengths)
    normalized = [[ll / next(lengths_by_item) for ll in lls] for lls in loglikelihoods]
    chosen, chosen_norm = [_argmax(lls) for lls in loglikelihoods], [_argmax(lls) for lls in normalized]
    answers = [item.answer for item in items]
    return MCResult(
        accuracy=_share_equal(chosen, answers),
        acc_norm=_share_equal(chosen_norm, answers),
        chosen=chosen,
        chosen_norm=chosen_norm,
        loglikelihoods=loglikelihoods,
    )


def encode_continuation(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids): `prompt + continuation` tokenized as one text, split where the prompt's
    own tokens stop matching.

    Tokenizing the two parts separately would not give the tokens the model sees: BPE merges across the
    boundary ("Answer: " + "A" is "Answer", ":", " A", not "Answer", ":", " ", "A"). So trailing whitespace
    moves from the prompt to the continuation (as lm-evaluation-harness does), and if a token still spans
    the boundary it is scored as part of the continuation.
    """
    stripped = prompt.rstrip()
    continuation = prompt[len(stripped) :] + continuation
    whole = tokenizer(stripped + continuation)["input_ids"]
    context = tokenizer(stripped)["input_ids"]
    n = 0
    while n < min(len(context), len(whole)) and context[n] == whole[n]:
        n += 1
    if n == 0:
        raise ValueError(f"the prompt {prompt[:40]!r} gives no context token to condition on")
    if n == len(whole):
        raise ValueError(f"the continuation {continuation!r} adds no tokens to the prompt")
    return whole[:n], whole[n:]


def sequence_logprobs(model: Any, sequences: list[tuple[list[int], list[int]]], batch_size: int = 8) -> list[float]:
    """The summed log-probability of each (input_ids, labels) sequence's labelled tokens (-100: not scored)."""
    return [-nll for nll, _ in _sequence_nll(model, sequences, batch_size)]


def _sequence_nll(
    model: Any, sequences: list[tuple[list[int], list[int]]], batch_size: int
) -> list[tuple[float, int]]:
    """(summed NLL, scored-token count) per (input_ids, labels) sequence, in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    # A one-token sequence predicts nothing. The rest go longest first, so each batch holds similar lengths
    # and little padding; results go back in input order.
    results: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    order = sorted((i for i, (ids, _) in enumerate(sequences) if len(ids) > 1), key=lambda i: -len(sequences[i][0]))
    with torch.inference_mode(), eval_mode(model):
        for chunk in _chunks(order, batch_size):
            ids, labels, mask = _right_pad([sequences[i] for i in chunk], device)
            # [:, -width:]: soft-prompt methods return logits for their virtual tokens too, in front.
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -ids.shape[1] :]
            nll, count = _batch_nll(logits, labels)
            for j, i in enumerate(chunk):
                results[i] = (float(nll[j]), int(count[j]))
    return results


def _batch_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: summed NLL of labels[1:] given logits[:-1] (positions with label -100 skipped), and the count."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    # Only scored positions go through log-softmax, in float32 whatever the model's dtype; sums in float64.
    token_nll = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="none")
    nll = torch.zeros(targets.shape, dtype=torch.float64, device=logits.device)
    nll[keep] = token_nll.double()
    return nll.sum(dim=1), keep.sum(dim=1)


def _right_pad(
    batch: list[tuple[list[int], list[int]]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    # Pad id 0 is never seen: the attention mask hides it and its label is -100.
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (seq_ids, seq_labels) in enumerate(batch):
        ids[row, : len(seq_ids)] = torch.tensor(seq_ids, dtype=torch.long)
        labels[row, : len(seq_labels)] = torch.tensor(seq_labels, dtype=torch.long)
        mask[row, : len(seq_ids)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _share_equal(got: list[int], expected: list[int]) -> float:
    return sum(g == e for g, e in zip(got, expected, strict=True)) / len(expected)
