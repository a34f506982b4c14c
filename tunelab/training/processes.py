"""`tunelab train CONFIG --nproc N`: the run in N processes on this machine, started by accelerate's launcher.

code = processes.run(cfg, nproc=2, arguments=["configs/lora.yaml", "train.max_steps=4"], resume=False)

Apart from tunelab.train on purpose: this process only checks and launches, so it imports what the checks need
(1.5 s), not the trainer (6 s, measured), and its N processes start that much sooner.
"""

from __future__ import annotations

import torch

from tunelab import launch, models
from tunelab.config import RunConfig
from tunelab.errors import TrainingFailedError
from tunelab.training.preflight import preflight


def run(cfg: RunConfig, nproc: int, arguments: list[str], resume: bool) -> int:
    """`tunelab train ARGUMENTS` in `nproc` processes on this machine (accelerate's launcher); their exit code,
    130 for Ctrl-C. The checks that need no weights run here first, so a mistake is said once, not per process."""
    preflight(cfg, resume)
    gpus = torch.cuda.device_count() if models.pick_device(cfg.model.device).type == "cuda" else 0
    code = launch.processes(nproc, ["train", *arguments, *(["--resume"] if resume else [])], gpus)
    if code not in (0, 130):
        raise TrainingFailedError(
            f"training in {nproc} processes failed (exit code {code}); the run is not marked complete. "
            "The failing process's error is above; `--resume` continues from the last complete checkpoint"
        )
    return code
