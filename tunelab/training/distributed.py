"""Several processes: who this one is, what it may write, and the TrainingArguments for DDP, FSDP2 or DeepSpeed.

Processes come from a launcher (`accelerate launch`, `torchrun`, or `tunelab train --nproc N`, which runs
accelerate's launcher); this module only reads the environment they set (RANK, LOCAL_RANK, WORLD_SIZE). The
training engine is transformers' Trainer on accelerate, which wraps the model (DDP, FSDP2, DeepSpeed) and shards
the batches. What is ours: every process runs the same code path (every collective is entered by all), and
only the main process writes the run directory and prints.

Everything a process computes (evaluation, the retention probe) is computed by every process: under FSDP each
forward needs all of them, and under DDP the ranks hold the same weights, so the results agree.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from tunelab import models
from tunelab.config.schema import RunConfig
from tunelab.errors import ConfigError, TunelabError


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1  # the processes on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The first process on its machine: the one that measures the machine's energy."""
        return self.local_rank == 0

    @property
    def several(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place as accelerate reads it: torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE,
    LOCAL_WORLD_SIZE), else an MPI launcher's (Open MPI, Intel MPI, MVAPICH), which accelerate takes on CPU."""
    from accelerate.utils.environment import get_cpu_distributed_information

    found = get_cpu_distributed_information()
    return World(found.rank, found.local_rank, found.world_size, found.local_world_size)


def start(cfg: RunConfig, device: torch.device) -> World:
    """Join the other processes (accelerate's PartialState: nccl on CUDA, gloo on CPU) with the config's
    timeout, so a process that died or hangs fails the others at their next collective step."""
    here = world()
    if here.several:
        if device.type == "mps":
            raise ConfigError("several processes on an Apple GPU (mps): not supported; train in one process")
        from accelerate import PartialState  # ~1 s; only with several processes

        PartialState(cpu=device.type == "cpu", timeout=timedelta(seconds=cfg.distributed.timeout_s))
        die_with_launcher()
        if not here.is_main:  # one set of loading bars and warnings: the main process's
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            warnings.simplefilter("ignore")
    return here


def stop() -> None:
    """Leave the process group (at the end of a multi-process command): the launcher sees a clean exit at once."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def die_with_launcher() -> None:
    """Linux: this process gets SIGKILL when its launcher dies (kill -9 of `tunelab train --nproc`, a lost
    job): left running, orphaned ranks would go on writing checkpoints that a `--resume` is about to read."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def device_for(here: World, picked: torch.device) -> torch.device:
    """One GPU per process: the local rank's. CPU and MPS: the device picked."""
    return torch.device("cuda", here.local_rank) if picked.type == "cuda" and here.several else picked


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather(value: Any) -> list[Any]:
    """Every process's `value`, in rank order (one process: [value])."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


# The methods that shard (FSDP, DeepSpeed): a LoRA adapter and the whole model, whose save is save_pretrained, which
# takes gathered weights.
SHARDED_METHODS = ("lora", "full")


def trains(method_name: str | None, strategy: str) -> bool:
    """Whether the method trains under the strategy (ddp; or a sharding one: fsdp, deepspeed, or the planner's
    zero2/zero3), which take SHARDED_METHODS only."""
    return strategy == "ddp" or method_name in SHARDED_METHODS


def check(cfg: RunConfig) -> list[str]:
    """What cannot work, said before any weights load (preflight's problems)."""
    strategy, problems = cfg.distributed.strategy, []
    if strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        problems.append(
            "distributed.strategy: deepspeed, but deepspeed is not installed. Fix: pip install deepspeed (CUDA "
            "machines), or distributed.strategy: fsdp (it shards like ZeRO-3)"
        )
    asked = launcher_strategy()
    if asked and asked != strategy:
        problems.append(
            f"the launcher's accelerate config asks for {asked}, the run config for distributed.strategy: {strategy} "
            f"(tunelab follows the run config). Fix: distributed.strategy: {asked}, or launch without that config"
        )
    if strategy != "ddp" and on_cpu(cfg):
        # accelerate 1.16 shards only on accelerators: its multi-process CPU mode is DDP (accelerate/state.py), though
        # torch's FSDP2 itself runs on CPU with gloo (tests/test_distributed.py gathers and saves a sharded model).
        problems.append(
            f"distributed.strategy: {strategy} on CPU: accelerate shards with FSDP and DeepSpeed on GPUs only. "
            "Fix: distributed.strategy: ddp on CPU (every process holds the whole model)"
        )
    if not trains(cfg.method.name, strategy):
        problems.append(
            f"distributed.strategy: {strategy} with method {cfg.method.name}: tunelab shards "
            f"{' and '.join(SHARDED_METHODS)} only. Fix: distributed.strategy: ddp"
        )
    if strategy != "ddp" and (cfg.forgetting.l2_to_base or cfg.forgetting.merge_back):
        problems.append(
            f"forgetting.l2_to_base / merge_back need whole weights, and distributed.strategy: {strategy} shards "
            "them. Fix: distributed.strategy: ddp, or data.replay_fraction instead (it works with every strategy)"
        )
    return problems


def whole_state_dict(trainer) -> dict[str, Any] | None:
    """Sharded weights gathered whole; every process must call it. None where each process already holds whole
    weights (one process, DDP)."""
    if trainer.is_deepspeed_enabled:  # ZeRO-2 keeps whole weights in every process; ZeRO-3 gathers (in 16 bits)
        stage3 = trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
        return trainer.accelerator.get_state_dict(trainer.model_wrapped) if stage3 else None
    return gathered(trainer.model)


def gathered(model) -> dict[str, Any] | None:
    """FSDP2's sharded (DTensor) parameters gathered into whole CPU tensors on the main process (an empty dict on
    the others), by torch.distributed.checkpoint; None for a model that is not sharded."""
    from torch.distributed.tensor import DTensor  # loaded already wherever FSDP2 sharded the model

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # as above

    # ignore_frozen_params: a LoRA artifact is its trainable weights; the frozen base would only fill rank 0's memory.
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


def save_with(state_dict: dict[str, Any]):
    """A method's `save` for weights gathered from shards: save_pretrained with them (peft keeps its adapter's)."""

    def save(model, directory) -> None:
        model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)

    return save


def launcher_strategy() -> str | None:
    """What `accelerate launch --config_file` (or `--use_fsdp`, `--use_deepspeed`) told the processes to use."""
    for strategy, variable in (("fsdp", "ACCELERATE_USE_FSDP"), ("deepspeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "").lower() == "true":
            return strategy
    return None


def on_cpu(cfg: RunConfig) -> bool:
    with contextlib.suppress(TunelabError):  # a device this machine lacks: preflight's device check says so
        return models.pick_device(cfg.model.device).type == "cpu"
    return False


def from_main(value: Any) -> Any:
    """The main process's `value` in every process: for a decision that must be the same everywhere (steps that
    fit a time budget, activation checkpointing) and that rests on timings or memory readings."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def training_arguments(cfg: RunConfig, model) -> dict[str, Any]:
    """TrainingArguments for the strategy: the same under any launcher, and inert in a single process."""
    settings = cfg.distributed
    # Every trainable parameter takes part in every step (tunelab's methods; transformers 5 keeps a mixture of
    # experts' weights in one tensor per layer, so an expert no token reached still leaves no parameter unused),
    # so DDP need not search the graph for unused ones each step (transformers' default searches, and warns).
    values: dict[str, Any] = {"ddp_timeout": settings.timeout_s, "ddp_find_unused_parameters": False}
    if settings.strategy == "fsdp":
        values["fsdp"] = "full_shard auto_wrap"
        values["fsdp_config"] = {
            "version": 2,
            # One FSDP unit per decoder layer: its parameters are gathered just before it runs and freed after.
            "transformer_layer_cls_to_wrap": decoder_layer_classes(model),
            "state_dict_type": "FULL_STATE_DICT" if settings.fsdp_state_dict == "full" else "SHARDED_STATE_DICT",
        }
    elif settings.strategy == "deepspeed":
        values["deepspeed"] = deepspeed_config(settings.zero_stage)
    return values


def decoder_layer_classes(model) -> list[str]:
    """The model's repeated block (transformers' `_no_split_modules`, e.g. LlamaDecoderLayer)."""
    from tunelab.training.loss import unwrap  # here: the preflight imports this module, and loss imports transformers

    inner = unwrap(model)
    names = list(getattr(inner, "_no_split_modules", None) or [])
    if not names:
        raise ConfigError(
            f"distributed.strategy: fsdp needs the model's decoder layer class, and {type(inner).__name__} names "
            "none (_no_split_modules). Fix: distributed.strategy: ddp."
        )
    return names


def deepspeed_config(stage: int) -> dict[str, Any]:
    """ZeRO at the stage asked; "auto" lets transformers fill batch sizes, precision and the optimizer in."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # the final save is one whole model
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }
