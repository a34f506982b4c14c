"""Will it fit, and how long will it take? Every fine-tuning method, estimated before any weights load.

    tunelab plan configs/lora.yaml train.per_device_train_batch_size=16
    tunelab plan configs/lora.yaml --json
    tunelab plan configs/lora.yaml --nproc 2       # per process under ddp, fsdp, DeepSpeed ZeRO-2/3

    from tunelab import config, planning
    result = planning.plan(config.load("configs/lora.yaml"))
    planning.render(result, console)

Modules: shape (the model's config and each method applied to a weightless meta-device copy: exact
parameter counts, weight bytes), activations (bytes saved for backward per token), tokens (token
lengths of the data), estimate (memory and time arithmetic, calibration constants), machine (matmul rate,
available memory), recommend (the rule), planner (the orchestration), report (table and JSON), checkpointing
(the mode a run uses when train.activation_checkpointing is auto), distributed (with N processes: each one's
memory by strategy, the epoch's time).
The figures and their calibration against measured runs: docs/planning.md.
"""

from tunelab.planning.budget import TrainingTime, fit_time_budget, training_time
from tunelab.planning.checkpointing import checkpointing_mode
from tunelab.planning.planner import MethodPlan, Plan, plan
from tunelab.planning.report import render, to_dict

__all__ = [
    "MethodPlan",
    "Plan",
    "TrainingTime",
    "checkpointing_mode",
    "fit_time_budget",
    "plan",
    "render",
    "to_dict",
    "training_time",
]
