"""The `distributed:` and `energy:` sections: how a run spreads over processes, and how its cost is measured.

Processes come from a launcher (`accelerate launch`, `torchrun`, or `tunelab train --nproc N`, which starts
accelerate); these settings only say what each process does with the model. They reach transformers'
TrainingArguments (ddp/fsdp/deepspeed), so the same config trains alike under any of those launchers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.config.methods import Strict


class DistributedConfig(Strict):
    """Several processes (GPUs, machines): data parallel by default, or sharded."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="ddp: every process holds the whole model (the default). fsdp: FSDP2 shards parameters, "
        "gradients and optimizer state, one unit per decoder layer (lora, full). deepspeed: ZeRO (needs deepspeed).",
    )
    fsdp_state_dict: Literal["full", "sharded"] = Field(
        "sharded",
        description="fsdp checkpoints: `sharded` (each process writes its shard; fast, resumable with the same "
        "process count) or `full` (gathered on the main process). The final artifact is always gathered whole.",
    )
    zero_stage: Literal[2, 3] = Field(
        2, description="deepspeed: ZeRO stage 2 (optimizer state + gradients sharded) or 3 (parameters too)."
    )
    timeout_s: int = Field(
        1800,
        ge=120,  # above the longest wait before the last collective step (the energy reading's, 90 s at most)
        description="How long a process waits for the others at a collective step before the run fails "
        "(a crashed process then stops the whole run instead of hanging it).",
    )


class EnergyConfig(Strict):
    """Compute and energy per run: device-hours by type, kWh and estimated CO2 (codecarbon, offline)."""

    enabled: bool = Field(True, description="Measure energy (RAPL on Linux CPUs, NVML on NVIDIA GPUs, else TDP).")
    country: str = Field(
        "USA",
        min_length=3,
        max_length=3,
        description="ISO 3166 alpha-3 code of the grid the machine draws from; sets the CO2 per kWh.",
    )
    region: str | None = Field(None, description="A region within the country (codecarbon's names), if known.")
