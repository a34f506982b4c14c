"""A run killed with SIGKILL and resumed ends with the same weights, bit for bit, as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from tests.helpers import run_cli, write_config

# LoRA with dropout: resuming must restore the data order and the RNG state, or the weights differ.
METHOD = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.1}
TRAIN = {"max_steps": 8, "save_steps": 2, "learning_rate": 5e-3, "save_total_limit": 2}

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import TrainerCallback
    from tunelab import config, train

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: as hard as a crash gets

    train.run(config.load(sys.argv[1]), callbacks=(KillAt(),))
    """
)


def adapter_weights(run_dir):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_kill_minus_nine_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    (tmp_path / "a").mkdir()
    straight = write_config(tmp_path / "a", tiny_model_dir, method=METHOD, train=TRAIN)
    assert run_cli(["train", str(straight)]).exit_code == 0

    (tmp_path / "b").mkdir()
    killed = write_config(tmp_path / "b", tiny_model_dir, method=METHOD, train=TRAIN)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(killed), "5"], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_b = tmp_path / "b" / "run"
    assert not (run_b / "COMPLETE").exists()
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]

    # An unfinished run is never loaded as if whole.
    incomplete = run_cli(["generate", str(run_b), "hello"])
    assert incomplete.exit_code != 0 and "incomplete run" in incomplete.output

    # A crash in the middle of writing checkpoint-6 leaves a directory without the completion marker.
    partial = run_b / "checkpoints" / "checkpoint-6"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half a file")

    resumed = run_cli(["train", str(killed), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from checkpoint-4" in resumed.output
    assert "removed incomplete checkpoint checkpoint-6" in resumed.output

    a, b = adapter_weights(tmp_path / "a" / "run"), adapter_weights(run_b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    state = json.loads((run_b / "trainer_state.json").read_text())
    assert state["global_step"] == TRAIN["max_steps"]
