"""Activation checkpointing in the strengths `train.activation_checkpointing` names.

    checkpointing.enable(model, "selective")      # before training: "off", "selective" or "full"

- `full`: each decoder layer keeps only its input; the backward pass runs the whole layer forward again,
  matrix multiplies included. The least memory, at the cost of a forward pass (~40% of a LoRA step here).
- `selective`: each layer keeps the outputs of its matrix multiplies and its attention, and recomputes the
  rest in the backward pass: norms, rotary embeddings, the activation function and its product, residual
  sums. Those cost little compute but hold as much memory as the matmul outputs (a SwiGLU MLP keeps the
  gate, up, activation and product tensors: the last two are recomputed). Measured on the built-in model
  (bench/speed.py, 2-core CPU): wide rows 27% less peak RSS for 2% of the speed; demo rows 15% less for 18%.
  Its cost is a constant ~1 s a step of Python (torch's checkpoint dispatch modes run for every aten op of
  the forward and the recompute), so it pays on long batches (docs/speed.md).
- `off`: every activation kept.

Both strengths go through transformers' `activation_checkpointing_enable` (torch's non-reentrant checkpoint
around each decoder layer); `selective` adds torch's selective-checkpoint policy
(`torch.utils.checkpoint.create_selective_checkpoint_contexts`) as the checkpoint's `context_fn`. It is given
to the model here rather than through TrainingArguments, whose arguments must serialize to JSON.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

aten = torch.ops.aten
# matmul op -> position of its first operand (a [.., K] matrix: K is the inner dimension)
MATMULS = {aten.mm.default: 0, aten.bmm.default: 0, aten.addmm.default: 1, aten.baddbmm.default: 2}
ATTENTION = {
    getattr(aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",  # torch's CPU kernel
        "_scaled_dot_product_flash_attention",  # CUDA
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    if hasattr(aten, name)
}
# A matmul output is kept when recomputing it costs at least 2 x this many FLOPs per kept element: every
# projection of a real model (hidden sizes >= 256), not LoRA's rank-r products (r <= 64 as usually set),
# which are as cheap to recompute as they are to keep.
MIN_INNER_DIM = 128


def policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Keep what costs matrix multiplies to recompute; recompute everything else."""
    if op in ATTENTION:
        return CheckpointPolicy.MUST_SAVE
    if op in MATMULS and args[MATMULS[op]].shape[-1] >= MIN_INNER_DIM:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def selective_context():
    return create_selective_checkpoint_contexts(policy)


def enable(model, mode: str) -> None:
    """Turn the model's checkpointing on at `mode` ("off" leaves it as it is)."""
    if mode == "off":
        return
    kwargs = {"use_reentrant": False}  # non-reentrant: frozen inputs (peft), keyword arguments (row bounds)
    if mode == "selective":
        kwargs["context_fn"] = selective_context
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
