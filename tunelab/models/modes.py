"""A model's train/eval mode around a pass that must be deterministic.

with eval_mode(model): ...   # dropout off inside; the caller's mode back after
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout off (greedy decoding and likelihood scores must be deterministic), then the caller's mode back,
    so generating or scoring from inside a training loop leaves the model training."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
