"""The training loss computed only where it is trained: the LM head runs on trained positions alone.

Why: in instruction tuning most tokens are prompt (the demo: ~200 of ~220 per row), yet a causal LM
computes logits for every position, rows x 49,152 floats for SmolLM2, and backpropagates through
them. The LM head is ~21% of a LoRA step's FLOPs on the built-in model and its fp32 logits dominate
activation memory. Running the decoder, then the head on the hidden states of trained positions
only, gives the same loss and gradients (tests/test_loss.py) for less work.

The head and loss then run a chunk of trained tokens at a time (`ChunkedLinearCrossEntropy`), computing
the gradients as they go, so the logits are never held whole: on rows with long answers (the wide set:
~1,000 trained tokens a batch) a whole-batch head holds logits, log-softmax and their gradient, ~0.6 GB
of fp32, where a 256-token chunk holds 50 MB. We wrote it because the libraries that do this (Liger
Kernel, Apple's cut-cross-entropy) are Triton kernels for GPUs only.

Only for architectures whose logits are a plain linear map of the last hidden state; models with
logit scaling or soft-capping keep the model's own loss (`supports_sparse_head`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.training import padding_free

# Causal LMs whose forward is `lm_head(decoder(...).last_hidden_state)` with nothing after the head.
PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo2"}
IGNORE = -100


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (peft injects its layers in place, so they still run)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_sparse_head(model: nn.Module) -> bool:
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    return (
        getattr(config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES
        and hasattr(inner, "get_decoder")
        and isinstance(inner.get_output_embeddings(), nn.Linear)
    )


def trained_positions_loss(
    model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None, chunk_tokens: int = 256
) -> torch.Tensor:
    """Next-token cross-entropy over trained tokens, summed and divided like transformers' ForCausalLMLoss:
    by `num_items_in_batch` (all trained tokens of the accumulated batch) when given, else by this batch's."""
    inner = unwrap(model)
    labels = inputs["labels"]
    hidden = inner.get_decoder()(**padding_free.decoder_inputs(inputs)).last_hidden_state  # padded or packed
    # Position t predicts token t+1: shift the labels left and keep the positions whose target is trained.
    targets = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    keep = targets != IGNORE
    head = inner.get_output_embeddings()
    loss = ChunkedLinearCrossEntropy.apply(hidden[keep], head.weight, head.bias, targets[keep], chunk_tokens)
    divisor = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if torch.is_tensor(divisor):
        divisor = divisor.to(loss.device)
    return loss / divisor


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum_i cross_entropy(hidden_i @ weight.T + bias, target_i), `chunk` rows at a time.

    Each chunk's logits are made, turned into their gradient (softmax minus one-hot) in place, multiplied
    back into the gradients of hidden (and of weight and bias when they train) and freed before the next
    chunk: the same FLOPs as the plain head (one matmul forward, one or two backward), no recompute, and
    logits of at most `chunk` rows alive. Logits are computed in the weights' dtype and upcast to fp32 for
    the softmax, as transformers' ForCausalLMLoss does; the weight gradient accumulates in fp32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_bias = bias is not None and ctx.needs_input_grad[2]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            rows, wanted = hidden[start : start + chunk], targets[start : start + chunk]
            logits = F.linear(rows, weight, bias).float()
            norm = torch.logsumexp(logits, dim=-1)
            total += (norm - logits.gather(1, wanted[:, None]).squeeze(1)).sum()
            grad_logits = logits.sub_(norm[:, None]).exp_()  # softmax, in the logits' own memory
            grad_logits[torch.arange(len(wanted), device=wanted.device), wanted] -= 1
            if need_hidden:
                torch.mm(grad_logits.to(weight.dtype), weight, out=grad_hidden[start : start + chunk])
            if need_weight:
                grad_weight.addmm_(grad_logits.t(), rows.float())
            if need_bias:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            None if grad_hidden is None else grad_hidden * grad_total.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_total).to(weight_dtype),
            None if grad_bias is None else (grad_bias * grad_total).to(bias_dtype),
            None,
            None,
        )
