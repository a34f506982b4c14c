"""`tunelab plan CONFIG`: every method's memory and time on this machine, before any weights load.

    from tunelab import config, planning
    result = planning.plan(config.load("configs/lora.yaml"))
    result.recommendation.label, [row.label for row in result.rows]
    result = planning.plan(config.load("configs/lora.yaml"), nproc=2)   # also per process, by strategy

Steps: the model's config (no weights) → token lengths of the data → per method, the method applied to a
meta-device model (exact counts) → memory and time arithmetic (estimate.py) → the recommendation rule
(recommend.py). With N processes, each method's memory per process by strategy and its time (distributed.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from tunelab import methods, models
from tunelab.config import RunConfig
from tunelab.config.methods import METHOD_MODELS, LoraOptions
from tunelab.errors import ConfigError, TunelabError
from tunelab.planning import distributed, estimate, machine, objectives, recommend
from tunelab.planning.shape import Layout, method_layout, model_config
from tunelab.planning.tokens import TokenStats, assumed_stats, token_stats
from tunelab.training.distributed import trains
from tunelab.training.preflight import PREFERENCE_METHODS

# One row per registered method and variant (MethodSpec.plan_variants: qlora once per base precision), as
# (label, method name, options); labels are recommend.CAPABILITY entries.
ROWS = tuple((label, name, fixed) for name, spec in methods.METHODS.items() for label, fixed, _ in spec.plan_rows())


@dataclass(frozen=True)
class MethodPlan:
    label: str
    method: dict[str, Any]  # the method options planned (the config's own for the configured method)
    trainable: int | None = None
    total: int | None = None
    memory: estimate.MemoryEstimate | None = None
    seconds_per_epoch: float | None = None
    seconds_per_step: float | None = None
    unavailable: str | None = None  # why the method cannot run here
    per_process: distributed.ProcessPlan | None = None  # with N > 1 processes


@dataclass(frozen=True)
class Plan:
    model: str
    device: str
    compute_dtype: str
    available: int  # bytes
    available_kind: str  # "RAM" or "GPU memory"
    matmul_flops_per_second: float
    tokens: TokenStats
    configured: str  # label of the configured method's row
    rows: list[MethodPlan]
    recommendation: recommend.Recommendation
    notes: list[str] = field(default_factory=list)
    processes: distributed.Processes | None = None  # None: one process


def plan(cfg: RunConfig, nproc: int = 1) -> Plan:
    """Estimate every method for this config on this machine and recommend one (see recommend.py); with
    `nproc` > 1, also per process under each distributed strategy, and recommend by the configured one."""
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, not {nproc}")
    device = models.pick_device(cfg.model.device)
    compute_dtype = models.pick_dtype(cfg.model.dtype, device)
    hf_config = causal_lm_config(cfg)
    stats = data_tokens(cfg)
    available, kind = machine.available_memory(device)
    checkpointing = cfg.train.activation_checkpointing  # `auto` is planned as off: on only if the run does not fit
    checkpointing = checkpointing if checkpointing in ("selective", "full") else "off"
    rate = machine.matmul_rate(device, compute_dtype)
    spread = distributed.processes(cfg, stats, nproc, device.type) if nproc > 1 else None
    setting = run_setting(cfg, hf_config, stats, device, compute_dtype, checkpointing, rate, spread)
    rows = [plan_method(label, method_cfg, setting) for label, method_cfg in method_configs(cfg.method)]
    candidates = [candidate(row, spread) for row in rows]
    return Plan(
        model=cfg.model.name,
        device=device.type,
        compute_dtype=str(compute_dtype).removeprefix("torch."),
        available=available,
        available_kind=kind,
        matmul_flops_per_second=setting.rate,
        tokens=stats,
        configured=configured_label(cfg.method),
        rows=rows,
        recommendation=recommend.recommend(candidates, available),
        notes=notes(stats, device, setting.checkpointing) + objectives.notes(cfg) + process_notes(spread, device),
        processes=spread,
    )


def candidate(row: MethodPlan, spread: distributed.Processes | None) -> recommend.Candidate:
    """With N processes a method is judged by the configured strategy's memory and the time with N."""
    if spread is None or row.per_process is None:
        return recommend.Candidate(row.label, _total(row), row.seconds_per_epoch)
    if not trains(row.method.get("name"), spread.strategy):
        return recommend.Candidate(row.label, None, None)  # the preflight refuses it: never recommended
    needed = spread.needed(row.per_process.memory[spread.strategy].total)
    return recommend.Candidate(row.label, needed, row.per_process.seconds_per_epoch)


def configured_memory(
    cfg: RunConfig, stats: TokenStats, device: torch.device, dtype: torch.dtype, modes: tuple[str, ...]
) -> tuple[dict[str, int], int]:
    """The configured method's estimated peak memory under each checkpointing mode, and this machine's budget
    for it (available memory less recommend.HEADROOM), in bytes: what `auto` checkpointing decides on."""
    # Only memory is asked for: no matmul is measured (rate 1.0). The layout (a meta model) is built once.
    setting = run_setting(cfg, causal_lm_config(cfg), stats, device, dtype, checkpointing="off", rate=1.0)
    layout = method_setting_layout(cfg.method, setting)
    compute_bytes = torch.finfo(dtype).bits // 8
    extra = (
        0
        if isinstance(layout, str)
        else objectives.objective_bytes(
            cfg, setting.hf_config, stats, layout.weight_bytes, compute_bytes, cfg.method.name
        )
    )
    totals = {
        mode: 0
        if isinstance(layout, str)
        else estimate.estimate_memory(
            dataclasses.replace(layout, checkpointing=mode),
            stats,
            compute_bytes,
            device.type,
            setting.eval_positions,
            extra,
        ).total
        for mode in modes
    }
    available, _ = machine.available_memory(device)
    return totals, recommend.budget(available)


def causal_lm_config(cfg: RunConfig) -> Any:
    """The model's config; the arithmetic (activations.py, the sparse LM head) is that of decoder LMs."""
    from tunelab.models.tasks import CAUSAL_LM, task_of

    hf_config = model_config(cfg.model)
    task = cfg.model.task if cfg.model.task != "auto" else task_of(hf_config)
    if task != CAUSAL_LM:
        raise ConfigError(
            f"tunelab plan estimates causal language models; {cfg.model.name!r} is a {task} model (model.task)",
            ["plan a decoder model (e.g. the built-in smollm2-135m-instruct); encoder and seq2seq models come later"],
        )
    return hf_config


CHECKPOINTING_NOTES = {
    "selective": "with selective activation checkpointing (train.activation_checkpointing: selective): matmul and "
    "attention outputs kept, the rest recomputed",
    "full": "with full activation checkpointing (train.activation_checkpointing: full): the least memory, "
    "~40% more time",
}


def notes(stats: TokenStats, device: torch.device, checkpointing: str) -> list[str]:
    out = [] if stats.source == "data" else [stats.source]
    if checkpointing in CHECKPOINTING_NOTES:
        out.append(CHECKPOINTING_NOTES[checkpointing])
    if device.type != "cpu":
        out.append(f"the estimates are calibrated on CPU runs; on {device.type} they are not yet checked")
    return out


def process_notes(spread: distributed.Processes | None, device: torch.device) -> list[str]:
    if spread is None:
        return []
    if spread.share_machine:
        return [
            f"the {spread.nproc} processes share this machine's RAM and cores: fits? counts {spread.nproc} x the "
            "per-process memory, and an epoch takes as long as with one process"
        ]
    return [
        f"each of the {spread.nproc} processes is taken to have a GPU like this one ({device}): as much free, as fast"
    ]


def data_tokens(cfg: RunConfig) -> TokenStats:
    try:
        tokenizer = models.load_tokenizer(cfg.model)
    except (TunelabError, OSError) as err:
        return assumed_stats(cfg, f"tokenizer not loaded ({str(err).splitlines()[0]})")
    if cfg.objective.name != "sft":
        return objectives.objective_stats(cfg, tokenizer)
    return token_stats(cfg, tokenizer)


def method_configs(configured: Any) -> list[tuple[str, Any]]:
    """The configured method with its own options; the others with their defaults, except that the methods
    whose config takes the LoRA options (lora, qlora) share those (r, alpha, targets) of the configured one."""
    lora_options = configured.model_dump(include=set(LoraOptions.model_fields)) if _is_lora(configured) else {}
    out = []
    for label, name, fixed in ROWS:
        takes_lora_options = issubclass(METHOD_MODELS[name], LoraOptions)
        options: dict[str, Any] = {"name": name, **(lora_options if takes_lora_options else {})}
        if name == configured.name:
            options = configured.model_dump()
        out.append((label, METHOD_MODELS[name].model_validate({**options, **fixed})))
    return out


def configured_label(configured: Any) -> str:
    return methods.get(configured.name).plan_label(configured)


@dataclass(frozen=True)
class Setting:
    """What every method's plan shares: the model, the data, the run's options, this machine."""

    hf_config: Any
    stats: TokenStats
    eval_positions: int
    sparse_lm_head: bool  # train.sparse_lm_head
    padding_free: bool  # train.padding_free is not false
    checkpointing: str  # off, selective or full
    dtype: torch.dtype
    device: torch.device
    rate: float  # matmul FLOP/s
    cfg: RunConfig | None = None  # the run's objective and batch sizes (tunelab.planning.objectives)
    processes: distributed.Processes | None = None  # None: one process


def run_setting(
    cfg: RunConfig,
    hf_config: Any,
    stats: TokenStats,
    device: torch.device,
    dtype: torch.dtype,
    checkpointing: str,
    rate: float,
    processes: distributed.Processes | None = None,
) -> Setting:
    return Setting(
        hf_config=hf_config,
        stats=stats,
        eval_positions=estimate.evaluation_positions(cfg, stats),
        # TRL's trainers (preference objectives) use neither the sparse LM head nor padding-free batches.
        sparse_lm_head=cfg.train.sparse_lm_head and cfg.objective.name == "sft",
        padding_free=cfg.train.padding_free is not False and cfg.objective.name == "sft",
        checkpointing=checkpointing,
        dtype=dtype,
        device=device,
        rate=rate,
        cfg=cfg,
        processes=processes,
    )


def plan_method(label: str, method_cfg: Any, setting: Setting) -> MethodPlan:
    options = method_cfg.model_dump(exclude_none=True)
    layout = method_setting_layout(method_cfg, setting)
    if isinstance(layout, str):
        return MethodPlan(label, options, unavailable=layout)
    compute_bytes = torch.finfo(setting.dtype).bits // 8
    stats = setting.stats
    extra = (
        objectives.objective_bytes(
            setting.cfg, setting.hf_config, stats, layout.weight_bytes, compute_bytes, method_cfg.name
        )
        if setting.cfg is not None
        else 0
    )
    memory = estimate.estimate_memory(layout, stats, compute_bytes, setting.device.type, setting.eval_positions, extra)
    seconds_per_epoch = estimate.epoch_seconds(layout, stats, setting.rate, compute_bytes)
    per_process = None
    if setting.processes is not None:
        factor = estimate.allocator_factor(setting.device.type, compute_bytes)
        per_process = distributed.process_plan(memory, layout, seconds_per_epoch, setting.processes, factor)
    return MethodPlan(
        label,
        options,
        trainable=layout.trainable,
        total=layout.total,
        memory=memory,
        seconds_per_epoch=seconds_per_epoch,
        seconds_per_step=estimate.step_seconds(layout, stats, setting.rate, compute_bytes),
        per_process=per_process,
    )


def method_setting_layout(method_cfg: Any, setting: Setting) -> Layout | str:
    """The method's layout under this run's settings, or why it cannot be planned here."""
    objective = setting.cfg.objective.name if setting.cfg is not None else "sft"
    if objective != "sft" and method_cfg.name not in PREFERENCE_METHODS:
        return f"objective {objective} trains with {', '.join(PREFERENCE_METHODS)}"
    missing = methods.get(method_cfg.name).missing_packages()
    if missing:
        return f"needs {', '.join(missing)} (pip install {' '.join(missing)})"
    try:
        layout = method_layout(setting.hf_config, method_cfg.name, method_cfg, setting.dtype)
    except (ValueError, TunelabError) as err:  # e.g. freeze.trainable_layers beyond the model's depth
        return str(err).splitlines()[0]
    return dataclasses.replace(
        layout,
        sparse_head=layout.sparse_head and setting.sparse_lm_head,
        padding_free=layout.padding_free and setting.padding_free,
        checkpointing=setting.checkpointing,
    )


def _is_lora(method_cfg: Any) -> bool:
    return isinstance(method_cfg, LoraOptions)


def _total(row: MethodPlan) -> int | None:
    return row.memory.total if row.memory is not None else None
