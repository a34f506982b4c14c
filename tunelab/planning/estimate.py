"""The arithmetic of a plan: peak memory and time per epoch for one method, from sizes alone.

    memory = estimate_memory(layout, stats, compute_bytes=2, device_type="cpu")
    memory.total, memory.as_dict()
    seconds = epoch_seconds(layout, stats, matmul_flops_per_second, compute_bytes=2)   # None: row count unknown

Peak memory is what is alive at the worst moment of a step after the first (the optimizer states exist
by then), plus what an evaluation adds on top:

    weights     every weight at the dtype it is held in (shape.Layout.weight_bytes)
    optimizer   AdamW: two states per trainable weight, at its dtype
    activations the batch's tokens (padded, or its rows end to end when padding-free) x the bytes saved per
                token (activations.py), plus the compute-dtype
                copies autocast keeps of fp32 weights. With full activation checkpointing a block keeps
                only its input and one block at a time is recomputed with everything it saves; selective
                checkpointing keeps each block's matmul and attention outputs too
    logits      positions that get logits x vocab x (compute dtype + fp32 upcast + fp32 log-softmax)
    gradients   one per trainable weight; backward fills them as it frees activations, so the step holds
                max(ALLOCATOR_FACTOR x (activations + logits), gradients), not both
    evaluation  the full-vocabulary logits of one evaluation batch (validation loss, retention probe):
                the dense model computes logits at every position there
    overhead    python + torch + transformers + peft + tokenizer + data, measured (RUNTIME_OVERHEAD)

ALLOCATOR_FACTOR: on CPU, glibc's malloc keeps the memory a step frees (freed activations are scattered
through its heap), so the resident set grows well past the live tensors. Measured on the built-in model:
the live bytes a lora or qlora step adds (glibc mallinfo2) are the activation account's within 4%, while
RSS grows 1.3x-1.9x as much depending on the method; 1.75 is the activation-weighted mean (docs/planning.md).

Time is FLOPs over the measured matmul rate (machine.py) times an efficiency factor (EFFICIENCY, one per
compute dtype size), calibrated on measured runs (bench/plan_vs_measured.py, docs/planning.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tunelab.config import RunConfig
from tunelab.planning.shape import Layout
from tunelab.planning.tokens import TokenStats

# Resident memory of a training process before any weight loads: python, torch, transformers, peft,
# bitsandbytes, the tokenizer and the built data (support tickets). Measured by the `overhead` child of
# bench/plan_vs_measured.py on Linux x86-64, torch 2.13 CPU: 636 MiB (0.62 GB) in each of three runs.
RUNTIME_OVERHEAD = {"cpu": 636 * 2**20, "mps": 636 * 2**20}
# On a GPU the fixed cost on the device is the CUDA context and kernels (~0.5 GB; not measured here: this
# machine has no GPU); host RAM is not what runs out there.
CUDA_CONTEXT = 512 * 2**20
ADAM_STATES = 2
# Resident memory per live byte of activations (CPU, glibc malloc), by compute dtype size; calibrated in
# docs/planning.md: 1.75 with bf16 compute (a Zen 4 CPU), 1.1 with fp32 compute (a Zen 1 CPU without native
# bf16; fp32 activations are twice as big, and glibc serves more of them by mmap, which frees for real).
# Not measured on GPUs (none here): the CUDA caching allocator is taken as exact.
ALLOCATOR_FACTOR = {"cpu": {2: 1.75, 4: 1.1}, "mps": {2: 1.75, 4: 1.1}, "cuda": {2: 1.0, 4: 1.0}}
# The built-in retention probe's longest text in tokens (SmolLM2 tokenizer), scored in batches of 8.
PROBE_BATCH_TOKENS = 8 * 192
FP32 = 4
# Achieved share of the measured matmul rate over a whole training step (norms, attention, elementwise
# ops, the optimizer, data collation included), by compute dtype size. Calibrated in docs/planning.md: 0.34
# with bf16 compute (Zen 4: fast bf16 matmuls, so casts and elementwise work weigh more), 0.82 with fp32
# compute (Zen 1: slow fp32 matmuls dominate the step).
EFFICIENCY = {2: 0.34, 4: 0.82}


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int  # live bytes, before ALLOCATOR_FACTOR
    logits: int  # live bytes, before ALLOCATOR_FACTOR
    step_transient: int  # what the step adds at its peak: max(factor x (activations + logits), gradients)
    evaluation: int
    overhead: int
    objective: int = 0  # what a preference objective holds beside the step (tunelab.planning.objectives)

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.step_transient + self.evaluation + self.overhead + self.objective

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def estimate_memory(
    layout: Layout,
    stats: TokenStats,
    compute_bytes: int,
    device_type: str,
    eval_positions: int = 0,
    objective: int = 0,
) -> MemoryEstimate:
    """Peak memory of a training step with the biggest batch the data can produce, then an evaluation batch
    of `eval_positions` tokens (0: the run evaluates nothing), plus `objective` bytes held beside them."""
    batch_tokens = train_batch_tokens(layout, stats)
    activations = batch_tokens * saved_bytes_per_token(layout) + layout.cast_copy_bytes
    logits = logit_positions(layout, stats) * layout.vocab_size * (compute_bytes + 2 * FP32)
    factor = allocator_factor(device_type, compute_bytes)
    return MemoryEstimate(
        weights=layout.weight_bytes,
        gradients=layout.trainable_bytes,
        optimizer=ADAM_STATES * layout.trainable_bytes,
        activations=activations,
        logits=logits,
        step_transient=max(int(factor * (activations + logits)), layout.trainable_bytes),
        evaluation=eval_positions * layout.vocab_size * (compute_bytes + 2 * FP32),
        overhead=CUDA_CONTEXT if device_type == "cuda" else RUNTIME_OVERHEAD.get(device_type, RUNTIME_OVERHEAD["cpu"]),
        objective=objective,
    )


def saved_bytes_per_token(layout: Layout) -> float:
    """What the backward pass keeps per token: every block's activations; with full checkpointing each block's
    input (the residual stream) plus one block's activations, those of the block being recomputed; with
    selective checkpointing also what each block keeps (its matmul and attention outputs)."""
    blocks = layout.blocks_on_grad_path
    if layout.checkpointing == "off" or not blocks:
        return layout.saved_bytes_per_token
    kept = blocks * layout.hidden_size * layout.residual_bytes + layout.saved_bytes_per_token / blocks
    return kept + (layout.selective_saved_bytes_per_token if layout.checkpointing == "selective" else 0)


def allocator_factor(device_type: str, compute_bytes: int) -> float:
    by_dtype = ALLOCATOR_FACTOR.get(device_type, ALLOCATOR_FACTOR["cpu"])
    return by_dtype[4] if compute_bytes >= 4 else by_dtype[2]


def efficiency(compute_bytes: int) -> float:
    return EFFICIENCY[4] if compute_bytes >= 4 else EFFICIENCY[2]


def evaluation_positions(cfg: RunConfig, stats: TokenStats) -> int:
    """Tokens of the biggest evaluation batch a run scores: validation batches (when there is validation
    data) and the retention probe's batches (when it is on)."""
    positions = 0
    if cfg.data.validation is not None or cfg.data.val_size is not None:
        positions = cfg.train.per_device_eval_batch_size * stats.longest_row
    if cfg.forgetting.enabled:
        positions = max(positions, PROBE_BATCH_TOKENS)
    return positions


def train_batch_tokens(layout: Layout, stats: TokenStats) -> int:
    """Tokens of the biggest training batch: its longest rows end to end when padding-free, else batch size
    x (the longest row + any virtual tokens)."""
    if layout.padding_free:
        return stats.longest_batch_tokens
    return stats.batch_size * (stats.longest_row + layout.extra_tokens)


def logit_positions(layout: Layout, stats: TokenStats) -> int:
    """With the sparse LM head only trained positions get logits (tunelab.training.loss); else every position."""
    if layout.sparse_head:
        return stats.peak_trained_tokens
    return train_batch_tokens(layout, stats)


def flops_per_token(layout: Layout, context: float) -> float:
    """Matmul FLOPs per token through the blocks, forward and backward.

    Forward: 2 per weight, plus attention (q.k and attn.v: 4 x context x q_dim per block). Backward:
    input gradients through the blocks on the gradient path (2 per weight, and twice the attention),
    weight gradients for trainable weights (2 per weight); with full activation checkpointing, the forward of
    the blocks on the gradient path once more (selective checkpointing recomputes no matmul worth counting).
    Context is the mean number of earlier tokens a token attends to (causal: half the row)."""
    c_attn = 4 * context * layout.attention_width
    forward = 2 * layout.forward_linear_params + c_attn * layout.total_blocks
    backward = 2 * layout.grad_path_linear_params + 2 * layout.trainable_linear_params
    backward += 2 * c_attn * layout.blocks_on_grad_path
    if layout.checkpointing == "full":
        backward += 2 * layout.grad_path_linear_params + c_attn * layout.blocks_on_grad_path
    return forward + backward


def head_flops_per_position(layout: Layout) -> float:
    """The LM head: forward, the gradient into the blocks (when any block trains), its own weight gradient."""
    per_pass = 2 * layout.hidden_size * layout.vocab_size
    passes = 1 + (1 if layout.blocks_on_grad_path else 0) + (1 if layout.head_trainable else 0)
    return per_pass * passes


def epoch_flops(layout: Layout, stats: TokenStats) -> float | None:
    if stats.padded_tokens_per_epoch is None or stats.real_tokens_per_epoch is None or stats.rows is None:
        return None
    computed = stats.real_tokens_per_epoch if layout.padding_free else stats.padded_tokens_per_epoch
    tokens = computed + stats.rows * layout.extra_tokens
    mean_row = tokens / stats.rows
    positions = stats.trained_tokens_per_epoch if layout.sparse_head else tokens
    return tokens * flops_per_token(layout, mean_row / 2) + positions * head_flops_per_position(layout)


def epoch_seconds(
    layout: Layout, stats: TokenStats, matmul_flops_per_second: float, compute_bytes: int
) -> float | None:
    """Seconds per epoch at the calibrated share of this machine's matmul rate (None: rows unknown)."""
    flops = epoch_flops(layout, stats)
    return None if flops is None else flops / (matmul_flops_per_second * efficiency(compute_bytes))


def step_seconds(
    layout: Layout, stats: TokenStats, matmul_flops_per_second: float, compute_bytes: int
) -> float | None:
    epoch = epoch_seconds(layout, stats, matmul_flops_per_second, compute_bytes)
    return None if epoch is None or not stats.steps_per_epoch else epoch / stats.steps_per_epoch


def summary(memory: MemoryEstimate, seconds: float | None) -> dict[str, Any]:
    return {"memory": memory.as_dict(), "seconds_per_epoch": seconds}
