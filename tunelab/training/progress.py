"""Progress shown while long work runs: a training bar with ETA and the live loss."""

from __future__ import annotations

import math
import sys

from tqdm.auto import tqdm
from transformers import TrainerCallback


class LiveProgress(TrainerCallback):
    """A tqdm bar over optimizer steps with ETA, live loss and learning rate; eval results as lines."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(
            total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.bar is not None and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', math.nan):.2e}")
        evals = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, float)}
        if evals:
            text = ", ".join(f"{k}={v:.4f}" for k, v in evals.items() if not k.endswith(("_runtime", "per_second")))
            tqdm.write(f"step {state.global_step}: {text}", file=sys.stderr)  # stdout is for results (JSON)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
