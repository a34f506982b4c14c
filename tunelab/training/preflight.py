"""Checks that need no weights: run before any model loads, so mistakes cost seconds, not a load.

rows = preflight(cfg, resume=False)  → the parsed rows (every row checked, read once: training builds on them),
                                      or a ConfigError/DataError
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from tunelab import artifacts, data, methods, models
from tunelab.artifacts import RunDir
from tunelab.config.load import dump, validate
from tunelab.config.schema import RunConfig
from tunelab.data import preference
from tunelab.errors import ConfigError, TunelabError
from tunelab.evaluation import during_training, rewards
from tunelab.evaluation.metrics import unknown_metrics
from tunelab.training import anchor, distributed

# Keys a resumed run may change: extending training is the usual reason to resume with edits.
RESUMABLE_CHANGES = {("train", "max_steps"), ("train", "num_train_epochs")}


def preflight(cfg: RunConfig, resume: bool = False) -> data.RowSet:
    problems = check_device(cfg) + check_packages(cfg) + check_training(cfg) + check_objective(cfg)
    problems += check_new_tokens(cfg) + check_anchor(cfg) + distributed.check(cfg)
    problems += check_output_dir(cfg, resume)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found before loading the model", problems)
    return data.preflight(cfg) if cfg.objective.name == "sft" else preference.preflight(cfg)


def check_packages(cfg: RunConfig) -> list[str]:
    """What the method needs and this machine lacks (qlora: bitsandbytes), found before any weights load."""
    missing = methods.get(cfg.method.name).missing_packages()
    if not missing:
        return []
    return [f"method.name={cfg.method.name} needs {', '.join(missing)}: pip install {' '.join(missing)}"]


def check_new_tokens(cfg: RunConfig) -> list[str]:
    """data.new_tokens needs a method that trains the new embedding rows (the terms themselves are checked against
    the tokenizer when they are added, still before the weights load: tunelab.data.vocabulary)."""
    if not cfg.data.new_tokens:
        return []
    problems = []
    if not methods.get(cfg.method.name).trains_new_tokens:
        able = ", ".join(name for name, spec in methods.METHODS.items() if spec.trains_new_tokens)
        problems.append(
            f"data.new_tokens with method {cfg.method.name}: its new embedding rows would never train; use "
            f"method.name {able}, or remove data.new_tokens"
        )
    if cfg.objective.name != "sft":
        problems.append(f"data.new_tokens with objective {cfg.objective.name}: supported with sft only; remove it")
    with contextlib.suppress(TunelabError):  # a model that cannot be found: loading it says why, with the fix
        task = models.resolve_task(cfg.model)
        if task != "causal_lm":
            problems.append(f"data.new_tokens is for text generators (causal_lm); model.task resolves to {task}")
    return problems


def check_anchor(cfg: RunConfig) -> list[str]:
    """forgetting.l2_to_base and merge_back need a plain change to the base (tunelab.training.anchor)."""
    f = cfg.forgetting
    asked = [name for name, value in (("l2_to_base", f.l2_to_base), ("merge_back", f.merge_back)) if value]
    if not asked:
        return []
    problems = []
    why = anchor.check(cfg.method.name, bool(getattr(cfg.method, "use_dora", False)))
    if why:
        problems.append(f"forgetting.{' and '.join(asked)}: {why}")
    if f.l2_to_base and cfg.objective.name != "sft":
        problems.append(
            f"forgetting.l2_to_base with objective {cfg.objective.name}: sft only; the preference objectives keep "
            "the model near its start through their reference model"
        )
    return problems


# The methods the preference objectives are built and tested with: their reference is the model as training starts,
# which TRL scores once (tunelab.training.preference). Soft prompts and bottleneck adapters are not tested there.
PREFERENCE_METHODS = ("lora", "qlora", "full", "freeze")


def check_objective(cfg: RunConfig) -> list[str]:
    """What a preference objective cannot run with, before the model loads."""
    name = cfg.objective.name
    if name == "sft":
        return []
    problems = []
    if cfg.data.several_tasks:
        problems.append(f"objective {name} trains on one data file; data.train lists several tasks (an sft mix)")
    if cfg.method.name not in PREFERENCE_METHODS:
        problems.append(
            f"objective {name} with method {cfg.method.name}: not supported; use method.name "
            f"{', '.join(PREFERENCE_METHODS)} (DoRA: lora with use_dora: true)"
        )
    if name == "grpo":
        problems += check_grpo(cfg)
    if cfg.data.replay_fraction:
        problems.append(
            f"data.replay_fraction mixes in supervised rows, which objective {name} does not train on; set it to 0"
            + (" and use objective.sft_weight against forgetting" if name == "dpo" else "")
        )
    try:
        task = models.resolve_task(cfg.model)
    except TunelabError:  # a model that cannot be found: loading it says why, with the fix
        return problems
    if task != "causal_lm":
        problems.append(f"objective {name} trains a text generator (causal_lm); model.task resolves to {task}")
    return problems


def check_grpo(cfg: RunConfig) -> list[str]:
    """A batch holds whole groups of answers; the user's reward functions load."""
    problems = []
    t, group = cfg.train, cfg.objective.num_generations
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if batch % group:
        problems.append(
            f"objective.num_generations={group} must divide the batch (per_device_train_batch_size x "
            f"gradient_accumulation_steps = {batch}): set per_device_train_batch_size to a multiple of {group}"
        )
    for spec in cfg.objective.rewards:
        if spec.name == "python":
            try:
                rewards.user_function(spec)
            except ConfigError as exc:
                problems.append(str(exc))
    return problems


def check_device(cfg: RunConfig) -> list[str]:
    try:
        device = models.pick_device(cfg.model.device)
        models.pick_attention(cfg.model.attention, device, models.pick_dtype(cfg.model.dtype, device))
    except ConfigError as exc:
        return [str(exc)]
    return []


def check_training(cfg: RunConfig) -> list[str]:
    t, has_val = cfg.train, cfg.data.validation is not None or cfg.data.val_size is not None
    problems = []
    if t.eval_strategy not in ("auto", "no") and not has_val:
        problems.append(
            f"train.eval_strategy={t.eval_strategy} needs validation data: set data.validation or data.val_size"
        )
    if t.early_stopping_patience and not has_val:
        problems.append("train.early_stopping_patience needs validation data: set data.validation or data.val_size")
    if t.load_best_model_at_end and not has_val:
        problems.append("train.load_best_model_at_end needs validation data: set data.validation or data.val_size")
    unknown = unknown_metrics(cfg.eval.metrics, "eval.metrics")
    if unknown:
        return problems + unknown  # the metric choices below are built from these names
    choices = during_training.selectable_metrics(cfg)
    if t.metric_for_best_model.removeprefix("eval_") not in [c.removeprefix("eval_") for c in choices]:
        problems.append(
            f"train.metric_for_best_model={t.metric_for_best_model!r}: choose one of {', '.join(choices)} "
            "(add a metric to eval.metrics to select by it)"
        )
    if t.load_best_model_at_end and t.eval_strategy not in ("auto", t.save_strategy):
        problems.append(
            "train.load_best_model_at_end needs eval_strategy == save_strategy "
            f"(got {t.eval_strategy} / {t.save_strategy})"
        )
    if t.load_best_model_at_end and t.save_strategy == "steps" and t.eval_steps and t.save_steps % t.eval_steps:
        problems.append(f"train.save_steps ({t.save_steps}) must be a multiple of train.eval_steps ({t.eval_steps})")
    return problems


def check_output_dir(cfg: RunConfig, resume: bool) -> list[str]:
    path = cfg.train.output_dir
    unsafe = unsafe_run_dir(path)
    if unsafe:
        return [
            f"train.output_dir={path} is {unsafe}; a run needs a folder of its own, e.g. train.output_dir=runs/NAME"
        ]
    run_dir = RunDir(path)
    if resume and run_dir.has_run():
        # Resuming writes only tunelab's own files and deletes only its half-written checkpoints.
        return [] if run_dir.path.is_dir() else [f"train.output_dir={path} is a file, not a run directory"]
    fix = (
        "pass --resume to continue it, choose another output_dir (train.output_dir=runs/new), or set "
        "train.overwrite_output_dir=true to replace it (only tunelab's own files are removed)"
    )
    return artifacts.run_dir_problems(path, replace=cfg.train.overwrite_output_dir, option="train.output_dir", fix=fix)


def unsafe_run_dir(path: Path) -> str | None:
    """What `path` is when it must never be a run directory (the root, home, the current folder or one above it,
    an unexpanded ~), else None."""
    if str(path).startswith("~"):
        return "a path starting with ~, which tunelab does not expand (write it out in full)"
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        return "the filesystem root"
    if resolved == Path.home().resolve():
        return "your home folder"
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        return "the current folder (or one above it)"
    return None


def config_changes(cfg: RunConfig, run_dir: RunDir) -> list[str]:
    saved = yaml.safe_load(run_dir.config_file.read_text()) if run_dir.config_file.is_file() else {}
    with contextlib.suppress(ConfigError):  # through today's schema: a section added since has its default there
        saved = yaml.safe_load(dump(validate(saved, source=str(run_dir.config_file))))
    now = yaml.safe_load(dump(cfg))
    changed = [
        f"{section}.{key}: run has {saved.get(section, {}).get(key)!r}, config now says {value!r}"
        for section, fields in now.items()
        for key, value in (fields or {}).items()
        if saved.get(section, {}).get(key) != value and (section, key) not in RESUMABLE_CHANGES
    ]
    return [f"--resume with a changed config would not continue the same run: {c}" for c in changed]
