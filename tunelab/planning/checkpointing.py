"""Which activation checkpointing a run uses: the planner's peak-memory estimate decides `auto`.

    mode = checkpointing_mode(cfg, model, built, device, dtype)   # "off" | "selective" | "full"

The orchestrator (tunelab.train) asks this and hands the mode to the trainer, so training never calls up into
planning.
"""

from __future__ import annotations

import torch

from tunelab.config import RunConfig
from tunelab.console import info
from tunelab.models.tasks import CAUSAL_LM, model_task
from tunelab.planning import objectives, planner, tokens


def checkpointing_mode(cfg: RunConfig, model, data, device: torch.device, dtype: torch.dtype, tokenizer=None) -> str:
    """`auto` recomputes only what the run needs to fit: off when the planner's peak-memory estimate for this
    method on these rows fits this machine's budget, else selective when that fits, else full. Checkpointing
    costs time (full: ~40% of a LoRA step), and tunelab's padding-free batches and sparse LM head leave most
    runs on small models well inside memory."""
    setting = cfg.train.activation_checkpointing
    if setting != "auto":
        return setting
    if model_task(model) != CAUSAL_LM:
        return "off"  # the planner's arithmetic is that of decoder LMs
    if cfg.objective.name != "sft":  # the preflight's preference rows (data), as TRL will batch them
        stats = objectives.objective_stats(cfg, tokenizer, data.train)
    else:
        lengths = [len(ids) for ids in data.train["input_ids"]]
        trained = [sum(label != -100 for label in labels) for labels in data.train["labels"]]
        stats = tokens.from_lengths(lengths, trained, cfg.train.per_device_train_batch_size, cfg)
    estimates, budget = planner.configured_memory(cfg, stats, device, dtype, modes=("off", "selective"))
    if estimates["off"] <= budget:
        return "off"
    mode = "selective" if estimates["selective"] <= budget else "full"
    info(
        f"activation checkpointing: {mode}. This run's peak is estimated at {estimates['off'] / 2**30:.1f} GB "
        f"without it ({estimates['selective'] / 2**30:.1f} GB selective), against the {budget / 2**30:.1f} GB "
        "this machine can give it (train.activation_checkpointing: auto)"
    )
    return mode
