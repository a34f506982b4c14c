"""Each process's peak memory and the epoch's time when a run trains in N processes.

    tunelab plan configs/lora.yaml --nproc 2

    setting = processes(cfg, stats, nproc=2, device_type="cuda")
    per_process = process_plan(memory, layout, seconds_per_epoch, setting, allocator_factor)
    per_process.memory["fsdp"].total, per_process.seconds_per_epoch

Memory per process, by strategy (the config's `distributed:` section; the one-process account is estimate.py's):

    ddp    the whole model, its gradients and AdamW states, plus DDP's gradient buckets: a flat copy of the
           trainable gradients (accelerate's default gradient_as_bucket_view=False keeps both)
    fsdp   FULL_SHARD, one unit per decoder layer: weights, gradients and AdamW states divided by N, plus the whole
           weights in use: two decoder layers (the one computing and the next, prefetched) and the root unit
           (embeddings, final norm, LM head: its forward and backward span the whole step), gathered at the dtype
           they are held in (an upper bound where FSDP's mixed precision gathers them in bf16)
    zero2  DeepSpeed ZeRO-2: gradients and AdamW states divided by N, the whole weights (its reduce bucket not counted)
    zero3  DeepSpeed ZeRO-3: taken as fsdp (the same sharding; its prefetch and persistence thresholds not modelled)

Every process keeps the activations of its own per_device_train_batch_size batch, its evaluation batch, the
runtime overhead and what a preference objective adds (a reference model is taken as whole in every process).
Communication buffers (NCCL, gloo) are not counted.

Time: the rows are split over the processes (global batch = per-device batch x N x gradient accumulation), so
each runs 1/N of the epoch's FLOPs. On cuda each process has its own GPU, taken as like the one measured here:
the epoch takes 1/N as long. On CPU the processes share this machine's cores (and RAM): no faster than one.
No communication time is modelled (all-reduce, all-gather and reduce-scatter taken as hidden behind compute):
with slow links, or FSDP's gathers on every micro-batch of a small model, the time is a lower bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tunelab.config import RunConfig
from tunelab.planning.estimate import MemoryEstimate
from tunelab.planning.shape import Layout
from tunelab.planning.tokens import TokenStats
from tunelab.training.distributed import SHARDED_METHODS

# What each strategy divides by the process count; the keys are the table's columns, in order.
SHARDED = {
    "ddp": frozenset(),
    "fsdp": frozenset({"weights", "gradients", "optimizer"}),
    "zero2": frozenset({"gradients", "optimizer"}),
    "zero3": frozenset({"weights", "gradients", "optimizer"}),
}
# Decoder layers whose whole weights an FSDP process holds at once: the one computing, and the next one
# (FSDP2 prefetches one unit ahead in forward and in backward).
GATHERED_LAYERS = 2
CAPTION = (
    "Per process: ddp = whole model, gradients, AdamW states + DDP's gradient buckets; fsdp, zero3 = those / N "
    f"+ {GATHERED_LAYERS} decoder layers and the root unit gathered; zero2 = gradients, AdamW states / N; each with "
    "its own batch's activations. Time: rows split over N, no communication time modelled."
)


def refusal(strategy: str) -> str:
    return f"{strategy} shards {' and '.join(SHARDED_METHODS)} only"


@dataclass(frozen=True)
class Processes:
    """How a plan's run spreads: N processes, the config's strategy, and what they share."""

    nproc: int
    strategy: str  # the config's: a SHARDED key (deepspeed as zero2 or zero3)
    share_machine: bool  # cpu, mps: the processes share this machine's RAM and cores; cuda: a GPU each
    gradient_accumulation: int
    steps_per_epoch: int | None  # optimizer steps with N processes (None: rows unknown)

    def needed(self, per_process: int) -> int:
        """Bytes the available memory must hold: every process's where they share this machine's RAM."""
        return per_process * self.nproc if self.share_machine else per_process


@dataclass(frozen=True)
class ProcessMemory:
    """One process's peak; the fields of estimate.MemoryEstimate, each as this process holds it."""

    weights: int  # this process's share of the weights (all of them unless sharded)
    gathered: int  # whole weights of the units in use (fsdp, zero3)
    gradients: int
    buckets: int  # DDP's flat copy of the trainable gradients
    optimizer: int
    step_transient: int  # max(factor x (activations + logits), gradients), as in estimate.py
    evaluation: int
    overhead: int
    objective: int

    @property
    def total(self) -> int:
        held = self.weights + self.gathered + self.buckets + self.optimizer + self.step_transient
        return held + self.evaluation + self.overhead + self.objective

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class ProcessPlan:
    """One method's plan with N processes."""

    memory: dict[str, ProcessMemory]  # by strategy, every SHARDED key
    seconds_per_epoch: float | None
    seconds_per_step: float | None


def configured_strategy(cfg: RunConfig) -> str:
    distributed = cfg.distributed
    return f"zero{distributed.zero_stage}" if distributed.strategy == "deepspeed" else distributed.strategy


def processes(cfg: RunConfig, stats: TokenStats, nproc: int, device_type: str) -> Processes:
    accumulation = cfg.train.gradient_accumulation_steps
    steps = None
    if stats.rows is not None:  # each process draws ceil(rows / N) rows (accelerate pads the last batches even)
        steps = max(1, math.ceil(stats.rows / (stats.batch_size * nproc)) // accumulation)
    return Processes(nproc, configured_strategy(cfg), device_type != "cuda", accumulation, steps)


def process_plan(
    memory: MemoryEstimate, layout: Layout, seconds_per_epoch: float | None, setting: Processes, factor: float
) -> ProcessPlan:
    """Per-process memory under every strategy, and the epoch's time with N processes. `factor`: the allocator
    factor estimate.py applied to this method's activations and logits."""
    epoch = seconds_per_epoch
    if epoch is not None and not setting.share_machine:
        epoch /= setting.nproc
    step = epoch / setting.steps_per_epoch if epoch is not None and setting.steps_per_epoch else None
    by_strategy = {name: process_memory(memory, layout, name, setting.nproc, factor) for name in SHARDED}
    return ProcessPlan(by_strategy, epoch, step)


def process_memory(memory: MemoryEstimate, layout: Layout, strategy: str, nproc: int, factor: float) -> ProcessMemory:
    sharded = SHARDED[strategy]

    def share(name: str, size: int) -> int:
        return math.ceil(size / nproc) if name in sharded else size

    gradients = share("gradients", memory.gradients)
    gathered = 0
    if "weights" in sharded:
        layers = min(GATHERED_LAYERS, layout.total_blocks)
        gathered = layout.outside_blocks_bytes + layers * layout.largest_block_bytes
    return ProcessMemory(
        weights=share("weights", memory.weights),
        gathered=gathered,
        gradients=gradients,
        buckets=memory.gradients if strategy == "ddp" else 0,
        optimizer=share("optimizer", memory.optimizer),
        # Backward fills the gradients as it frees activations (estimate.py); sharded ones are reduce-scattered
        # layer by layer, so only this process's share stays.
        step_transient=max(int(factor * (memory.activations + memory.logits)), gradients),
        evaluation=memory.evaluation,
        overhead=memory.overhead,
        objective=memory.objective,
    )
