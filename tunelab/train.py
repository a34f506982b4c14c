"""`tunelab train CONFIG`: the one orchestration function, read top to bottom like a table of contents.

from tunelab import config, train
result = train.run(config.load("configs/lora.yaml"))
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import set_seed

from tunelab import artifacts, data, energy, methods, models, planning
from tunelab.artifacts import RunDir
from tunelab.config import RunConfig, dump
from tunelab.console import info
from tunelab.data import vocabulary
from tunelab.data.preference import PreferenceSet
from tunelab.evaluation import forgetting
from tunelab.evaluation import preference as alignment
from tunelab.methods import new_tokens
from tunelab.models.tasks import CAUSAL_LM, CLASSIFIER
from tunelab.training import distributed, preference
from tunelab.training import trainer as trainers
from tunelab.training.anchor import BaseAnchor
from tunelab.training.preflight import preflight


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    artifact_dir: Path
    metrics: dict[str, Any]


def run(cfg: RunConfig, *, resume: bool = False, callbacks: tuple = ()) -> RunResult:
    """Train as the config says and write a complete run directory. Extra TrainerCallbacks are optional.
    Under a launcher every process runs this; only the main one writes the run directory and prints."""
    picked = models.pick_device(cfg.model.device)
    here = distributed.start(cfg, picked)  # one process, or one of several a launcher started (they join here)
    rows = preflight(cfg, resume)  # every check that needs no weights: data rows read and converted, once
    cfg = distributed.from_main(planning.fit_time_budget(cfg, here.size))  # train.time_budget: the steps that fit
    device = distributed.device_for(here, picked)
    gpus = here.local_size if device.type == "cuda" and here.several else None  # one GPU per process
    meter = energy.start(cfg.energy, device, here.is_local_main, gpus)  # device time; energy: once per machine
    try:
        return train_and_save(cfg, rows, device, here, meter, resume, callbacks)
    finally:
        meter.stop()  # a failed run too: codecarbon's thread ends


def train_and_save(cfg: RunConfig, rows, device, here, meter, resume: bool, callbacks: tuple) -> RunResult:
    task = models.resolve_task(cfg.model)  # from the model's config alone
    probe = forgetting.load_probe(cfg.forgetting) if cfg.forgetting.enabled and task == CAUSAL_LM else None
    run_dir = RunDir(cfg.train.output_dir)
    method = methods.get(cfg.method.name)
    compute_dtype = models.pick_dtype(cfg.model.dtype, device)

    tokenizer = models.load_tokenizer(cfg.model)
    added = vocabulary.add_new_tokens(cfg, tokenizer, rows)  # data.new_tokens (checked, or `auto`'s choice)
    # SFT: the same rows, tokenized, lengths checked. Preference objectives: TRL tokenizes its own rows.
    built = data.build_for_task(cfg, tokenizer, task, rows) if cfg.objective.name == "sft" else rows
    model = load_prepared_model(cfg, method, task, device, compute_dtype, tokenizer, added, built)
    base_probe = score_probe(model, tokenizer, probe, "the base model")
    held_out = alignment.HeldOut.of(cfg, tokenizer, rows, model)  # preference objectives: scores before training
    anchor = base_anchor(cfg, model)  # forgetting.l2_to_base / merge_back: the weights' way back to the base

    open_run_dir(cfg, run_dir, resume, here)
    checkpointing = distributed.from_main(  # auto: what fits, by the planner's estimate
        planning.checkpointing_mode(cfg, model, built, device, compute_dtype, tokenizer)
    )
    trainer = build_trainer(
        cfg, model, tokenizer, built, run_dir, device, compute_dtype, checkpointing, callbacks, probe, anchor
    )
    with trainer_attention(trainer):
        output = trainer.train(resume_from_checkpoint=resume_point(run_dir, resume, here))
        moved = merge_back(cfg, anchor, trainer.model)  # the final evaluation then scores the merged weights
        metrics = collect_metrics(trainer, output.metrics, model, built, fresh_eval=moved)
    score_result(cfg, trainer, tokenizer, metrics, held_out, probe, base_probe)
    artifact_dir = save_result(run_dir, method, trainer, tokenizer, here)
    metrics["compute"] = energy.combine(distributed.gather(meter.stop()))  # every process's device time
    if here.is_main:
        finish(cfg, run_dir, metrics, trainer, method.artifact)
    elif "forgetting" in metrics:  # a forgetting limit made fatal fails every process, not the main one alone
        forgetting.enforce(metrics["forgetting"], cfg.forgetting)
    info(f"[bold green]run complete[/]: {run_dir.path} ({method.artifact} in {artifact_dir.name}/)")
    return RunResult(run_dir.path, artifact_dir, metrics)


def load_prepared_model(cfg: RunConfig, method, task, device, compute_dtype, tokenizer, added, built):
    """The base model on its device, with the method's trainable parts (and data.new_tokens' rows) in place."""
    model = models.load_model(
        cfg.model,
        dtype=method.load_dtype(compute_dtype),
        device=device,
        task=task,
        **method.load_options(cfg.method, compute_dtype),
        **(models.classifier_options(built.report.labels) if task == CLASSIFIER else {}),
    )
    model = new_tokens.add_token_rows(model, added.pieces)  # each new row starts as the mean of its old pieces
    set_seed(cfg.train.seed)  # adapter init draws from the global RNG: same config, same starting weights
    model = new_tokens.train_token_rows(method.prepare(model, cfg.method, tokenizer), added.pieces)
    report_parameters(model, method.name, device, compute_dtype)
    return model


def score_result(cfg: RunConfig, trainer, tokenizer, metrics: dict[str, Any], held_out, probe, base_probe) -> None:
    """The trained weights' scores beyond the loss: held-out preferences, the retention probe (every process
    scores: under FSDP each forward needs them all)."""
    if held_out is not None:
        metrics["preference"] = held_out.report(trainer.model)
    if cfg.objective.name != "sft":  # reference batches TRL scored; 0: read from the cache (preference_data)
        metrics["reference_batches_computed"] = trainer.reference_batches
    if probe is not None:
        after_probe = score_probe(trainer.model, tokenizer, probe, "the result")
        metrics["forgetting"] = forgetting.compare(base_probe, after_probe, cfg.forgetting)


def save_result(run_dir: RunDir, method, trainer, tokenizer, here: distributed.World) -> Path:
    """The trained adapter or model, written by the main process. Sharded weights (FSDP, ZeRO-3) are first
    gathered whole from every process, so the artifact loads in one process like any other."""
    whole = distributed.whole_state_dict(trainer)  # every process takes part; None when each holds whole weights
    if here.is_main:
        save = method.save if whole is None else distributed.save_with(whole)
        artifacts.save_artifact(run_dir, method.artifact, trainer.model, tokenizer, save)
    distributed.barrier()  # no process reports the run done before its artifact is on disk
    return run_dir.artifact(method.artifact)


def build_trainer(
    cfg: RunConfig, model, tokenizer, built, run_dir: RunDir, device, dtype, checkpointing, callbacks, probe, anchor
):
    """SFT: tunelab's Trainer on the built rows. A preference objective: TRL's trainer for it on the rows."""
    if cfg.objective.name == "sft":
        return trainers.build(
            cfg, model, tokenizer, built, run_dir, device, dtype, checkpointing, callbacks, probe, anchor
        )
    return preference.build(cfg, model, tokenizer, built, run_dir, device, dtype, checkpointing, callbacks)


def base_anchor(cfg: RunConfig, model) -> BaseAnchor | None:
    """The base to measure and merge back toward, when a forgetting mitigation needs it (full: a weight copy)."""
    return BaseAnchor.of(model) if cfg.forgetting.l2_to_base or cfg.forgetting.merge_back else None


def merge_back(cfg: RunConfig, anchor: BaseAnchor | None, model) -> bool:
    """forgetting.merge_back: move the trained weights that share of the way back to the base."""
    share = cfg.forgetting.merge_back
    if anchor is None or not share:
        return False
    anchor.move_back(model, share)
    info(f"merged back toward the base: kept {100 * (1 - share):.0f}% of the change (forgetting.merge_back)")
    return True


def trainer_attention(trainer):
    """The attention a trainer trains under (padding-free batches need theirs); TRL's: the model's own."""
    return trainer.attention() if hasattr(trainer, "attention") else contextlib.nullcontext()


def finish(cfg: RunConfig, run_dir: RunDir, metrics: dict[str, Any], trainer, artifact: str) -> None:
    """Write metrics and state, then the completion marker, unless forgetting exceeded a limit the user
    made fatal: then the files stay but the run is not marked complete."""
    report = metrics.get("forgetting")
    fatal = report is not None and report["exceeded"] and cfg.forgetting.fail
    if fatal:
        artifacts.write_json(run_dir.path / "metrics.json", metrics)
    else:
        artifacts.finish(run_dir, metrics, dataclasses.asdict(trainer.state), artifact)
    info(f"compute: {energy.describe(metrics['compute'])}")
    if report is not None:
        info(forgetting.summary(report))
        forgetting.enforce(report, cfg.forgetting)  # raises when fatal, else warns about exceeded limits


def score_probe(model, tokenizer, probe, what: str):
    """The retention probe's score, or None when the probe is off."""
    if probe is None:
        return None
    info(f"retention probe on {what}: {len(probe.mc)} questions, {len(probe.texts)} passages")
    return forgetting.score(model, tokenizer, probe)


def report_parameters(model, method_name: str, device, dtype) -> None:
    trainable, total = methods.count_parameters(model)
    info(
        f"method [bold]{method_name}[/]: trainable params {trainable:,} / {total:,} "
        f"({100 * trainable / total:.2f}%) on {device.type}, compute dtype {str(dtype).removeprefix('torch.')}"
    )


def open_run_dir(cfg: RunConfig, run_dir: RunDir, resume: bool, here: distributed.World) -> None:
    """The run directory, made (or cleared for a new run) by the main process while the others wait."""
    if here.is_main:
        prepare_output_dir(cfg, run_dir, resume)
        artifacts.start(run_dir, dump(cfg))
    distributed.barrier()


def prepare_output_dir(cfg: RunConfig, run_dir: RunDir, resume: bool) -> None:
    if run_dir.has_run() and cfg.train.overwrite_output_dir and not resume:
        info(f"replacing the earlier run in {run_dir.path} (train.overwrite_output_dir=true; tunelab's files only)")
        artifacts.clear_run(run_dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)


def resume_point(run_dir: RunDir, resume: bool, here: distributed.World) -> str | None:
    """The newest complete checkpoint; half-written ones (a crash mid-save) are removed, never trusted. The main
    process chooses, and every process resumes from its choice."""
    if not resume:
        return None
    choice = None
    if here.is_main:
        for partial in artifacts.remove_incomplete_checkpoints(run_dir):
            info(f"removed incomplete checkpoint {partial.name} (the run stopped while writing it)")
        complete = artifacts.complete_checkpoints(run_dir)
        choice = str(complete[-1]) if complete else None
        info(f"resuming from {Path(choice).name}" if choice else "--resume: no complete checkpoint yet, starting over")
    return distributed.from_main(choice)


def final_evaluation(trainer, fresh: bool = False) -> dict[str, Any]:
    """The evaluation of the final weights: reused when the last step was just evaluated (and the weights have
    not changed since: `fresh`), else run now."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    best_loaded = trainer.args.load_best_model_at_end and trainer.state.best_global_step
    if evals and evals[-1]["step"] == trainer.state.global_step and not best_loaded and not fresh:
        return evals[-1]
    return trainer.evaluate()


def collect_metrics(trainer, train_metrics: dict[str, Any], model, built, fresh_eval: bool = False) -> dict[str, Any]:
    trainable, total = methods.count_parameters(model)
    metrics: dict[str, Any] = {"train": train_metrics, "trainable_params": trainable, "total_params": total}
    # A preference run's held-out measure is its own (metrics["preference"]); TRL's evaluation (for grpo: sampling
    # a group for every held-out prompt) runs only when the config asks for evaluations.
    asked = not isinstance(built, PreferenceSet) or trainer.args.eval_strategy != "no"
    if trainer.eval_dataset is not None and asked:
        metrics["eval"] = final_evaluation(trainer, fresh_eval)
    if isinstance(built, PreferenceSet):
        metrics["data"] = built.to_dict()
    else:
        metrics["data"] = built.report.to_dict() if hasattr(built.report, "to_dict") else built.report
    return metrics
