"""Preference objectives (dpo, orpo, kto) and GRPO on TRL's trainers, configured from the run config, composed.

    trainer = build(cfg, model, tokenizer, rows, run_dir, device, dtype)   # rows: data.preference.PreferenceSet

Prompts are rendered by tunelab's own templates (`render_prompt`, as SFT training and generation render them), so
TRL gets plain-text rows: prompt, then each answer (TRL appends the EOS, which is where an SFT answer ends too).

The reference model is never a second copy. For adapter methods it is the base with the adapter switched off (TRL
does this for a peft model); for every method, its log-probabilities are computed once, before the first step, by
TRL's `precompute_ref_log_probs` from the model as it starts (which IS the reference: a fresh adapter changes
nothing, full fine-tuning has not moved yet). They are cached: the rows live in the run directory
(`preference_data/`, an Arrow dataset) and TRL writes its tokenized rows and the reference log-probs beside them,
keyed by a fingerprint of the rows, the tokenizer and the model's starting weights. A resumed run, or a new run
into the same directory with the same rows, tokenizer, base model, method and seed, reads them back instead of
running the reference forward passes again; a change in any of those makes a new key (the old file stays unused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback

from tunelab.artifacts import RunDir, replace_dir
from tunelab.config.schema import RunConfig
from tunelab.console import info
from tunelab.data.preference import Judged, Pair, PreferenceSet, Prompted
from tunelab.data.templates import render_prompt
from tunelab.evaluation.rewards import reward_functions
from tunelab.training import activation_checkpointing, distributed
from tunelab.training.trainer import FiniteLoss, argument_values, standard_callbacks

DATA_DIR = "preference_data"  # in the run directory: the rows and TRL's caches (tokenized rows, reference log-probs)


@dataclass(frozen=True)
class ObjectiveTrainer:
    """How one objective is trained: TRL's config and trainer classes and the options from the config."""

    config_class: type
    trainer_class: type
    options: Any  # objective config -> dict of the TRL config's options


def _dpo_options(objective: Any) -> dict[str, Any]:
    losses, weights = [objective.loss_type], [1.0]
    if objective.sft_weight:
        losses, weights = [*losses, "sft"], [*weights, objective.sft_weight]
    return {"beta": objective.beta, "loss_type": losses, "loss_weights": weights, "precompute_ref_log_probs": True}


def _kto_options(objective: Any) -> dict[str, Any]:
    weights = {"desirable_weight": objective.desirable_weight, "undesirable_weight": objective.undesirable_weight}
    return {"beta": objective.beta, **weights, "precompute_ref_log_probs": True}


def objective_trainer(name: str) -> ObjectiveTrainer:
    """The TRL classes for an objective, imported here: trl takes ~3 s to import, which SFT runs never pay."""
    if name == "dpo":
        from trl import DPOConfig, DPOTrainer

        return ObjectiveTrainer(DPOConfig, _tunelab_trainer(DPOTrainer), _dpo_options)
    if name == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        # remove_unused_columns=False: ORPO's collator reads the rows' own columns (it warns and sets it otherwise).
        options = lambda o: {"beta": o.beta, "remove_unused_columns": False}  # noqa: E731
        return ObjectiveTrainer(ORPOConfig, _tunelab_trainer(ORPOTrainer), options)
    if name == "kto":
        from trl import KTOConfig, KTOTrainer

        return ObjectiveTrainer(KTOConfig, _tunelab_trainer(KTOTrainer), _kto_options)
    if name == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return ObjectiveTrainer(GRPOConfig, _tunelab_trainer(GRPOTrainer), _grpo_options)
    raise ValueError(f"not a preference objective: {name!r}")


def _grpo_options(objective: Any) -> dict[str, Any]:
    options = {key: getattr(objective, key) for key in ("num_generations", "max_completion_length", "temperature")}
    return {**options, "beta": objective.beta, "reward_weights": [r.weight for r in objective.rewards]}


class CountsReferencePasses:
    """Counts the batches TRL runs through the reference model (`compute_ref_log_probs`, its public per-batch
    method): none when its cache beside the stored rows already holds them. metrics.json reports the count."""

    reference_batches = 0

    def compute_ref_log_probs(self, model, inputs):
        self.reference_batches += 1
        return super().compute_ref_log_probs(model, inputs)


def _tunelab_trainer(trainer_class: type) -> type:
    """TRL's trainer with the loss check of every step and the reference count."""
    return type(f"Tunelab{trainer_class.__name__}", (FiniteLoss, CountsReferencePasses, trainer_class), {})


def build(
    cfg: RunConfig,
    model,
    tokenizer,
    rows: PreferenceSet,
    run_dir: RunDir,
    device: torch.device,
    dtype,
    checkpointing: str = "off",
    callbacks=(),
):
    """The TRL trainer for this run's objective, its rows from (and its caches in) run_dir/preference_data."""
    import datasets

    datasets.disable_progress_bars()  # TRL's dataset steps would print a bar each; LiveProgress shows training
    activation_checkpointing.enable(model, checkpointing)
    spec = objective_trainer(cfg.objective.name)
    train = stored_rows(run_dir, "train", table(cfg, tokenizer, rows.train))
    validation = (
        stored_rows(run_dir, "validation", table(cfg, tokenizer, rows.validation)) if rows.validation else None
    )
    values = argument_values(cfg, run_dir, device, dtype, validation is not None, model)
    # gradient_checkpointing: TRL's default is on; tunelab decides checkpointing itself (planning).
    common = {"max_length": cfg.train.max_seq_length, "gradient_checkpointing": False, "dataset_num_proc": None}
    known = {f.name for f in dataclasses.fields(spec.config_class)}
    args = spec.config_class(
        **values, **spec.options(cfg.objective), **{k: v for k, v in common.items() if k in known}
    )
    rewards = {"reward_funcs": reward_functions(cfg.objective.rewards)[0]} if cfg.objective.name == "grpo" else {}
    trainer = spec.trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        callbacks=[*standard_callbacks(cfg, run_dir), *callbacks],
        **rewards,
    )
    trainer.remove_callback(PrinterCallback)  # LiveProgress prints the logs
    if args_precompute(args):
        where = run_dir.path / DATA_DIR
        done = f"{trainer.reference_batches} batches scored" if trainer.reference_batches else "read from its cache"
        info(f"reference log-probs of the {len(train)} training rows: {done} ({where})")
    return trainer


def args_precompute(args) -> bool:
    return bool(getattr(args, "precompute_ref_log_probs", False))


def table(cfg: RunConfig, tokenizer, rows: list[Any]) -> list[dict[str, Any]]:
    """Rows as TRL's plain-text preference rows, prompts rendered as generation renders them."""

    def prompt(row: Pair | Judged | Prompted) -> str:
        return render_prompt(tokenizer, row.prompt, cfg.data.template, cfg.data.system)

    if rows and isinstance(rows[0], Judged):
        return [{"prompt": prompt(r), "completion": r.completion, "label": r.desirable} for r in rows]
    if rows and isinstance(rows[0], Prompted):  # the rewards read the other fields as columns
        return [{**r.columns, "prompt": prompt(r)} for r in rows]
    return [{"prompt": prompt(r), "chosen": r.chosen, "rejected": r.rejected} for r in rows]


def stored_rows(run_dir: RunDir, split: str, rows: list[dict[str, Any]]):
    """The rows as an Arrow dataset in run_dir/preference_data/SPLIT, written once: a folder holding these same
    rows is reused with the caches TRL wrote beside them. A folder of other rows is replaced, atomically."""
    from datasets import Dataset, load_from_disk

    folder = run_dir.path / DATA_DIR / split
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    stamp = folder / "rows.sha256"
    # Several processes: the main one writes, the others wait, then all read the same folder (and TRL's caches).
    if distributed.world().is_main and not (stamp.is_file() and stamp.read_text() == digest):
        tmp = folder.with_name(f".{split}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        Dataset.from_list(rows).save_to_disk(str(tmp))
        (tmp / "rows.sha256").write_text(digest)
        folder.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, folder)
    distributed.barrier()
    return load_from_disk(str(folder))


def cached_files(run_dir: RunDir | Path) -> list[Path]:
    """The cache files TRL wrote beside the stored rows (tokenized rows, reference log-probs)."""
    root = Path(getattr(run_dir, "path", run_dir)) / DATA_DIR
    return sorted(root.glob("*/cache-*.arrow"))
