"""Preference objectives end to end on the tiny Llama: every objective with lora and with full fine-tuning moves
the held-out preferences the right way; the reference log-probs are computed once and read back from the run
directory (counted); a run killed with SIGKILL resumes to the same weights, bit for bit, as one never stopped."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_cli, write_config, write_jsonl
from tests.test_resume import KILLER

LORA = {"name": "lora", "r": 4, "alpha": 8}
FULL = {"name": "full"}
# Steps and rates that move the tiny model's preferences clearly within seconds.
QUICK = {"max_steps": 6, "save_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 2}
RATE = {"lora": 1e-2, "full": 5e-4}


def pair_rows(n: int = 40, seed: int = 0) -> list[dict]:
    sums = [(a, b) for a in range(1, 10) for b in range(1, 10)]
    random.Random(seed).shuffle(sums)  # distinct rows: no copies kept together across the val_size split
    return [
        {"prompt": f"What is {a}+{b}?", "chosen": f"{a + b}", "rejected": f"I do not know {a} {b}"}
        for a, b in sums[:n]
    ]


# GRPO: prompts, and a reward the tiny random model can learn within a few steps (shorter answers).
SHORTER = "def shorter(prompts, completions, **columns):\n    return [-len(c) / 40 for c in completions]\n"
GRPO = {"name": "grpo", "num_generations": 4, "max_completion_length": 8, "rewards": [{"name": "python"}]}
GRPO_TRAIN = {"max_steps": 12, "per_device_train_batch_size": 8, "save_steps": 4, "logging_steps": 4}
RATE["grpo"] = 3e-2


def prompt_rows(n: int = 24) -> list[dict]:
    return [{"prompt": f"Give JSON for item {i}", "reference": json.dumps({"id": i % 3})} for i in range(n)]


def grpo_objective(folder: Path) -> dict:
    (folder / "rewards.py").write_text(SHORTER)
    return {**GRPO, "rewards": [{"name": "python", "function": f"{folder / 'rewards.py'}:shorter"}]}


def aligned_run(tmp_path: Path, model_dir: Path, objective: dict, method: dict, rows=None, **train) -> Path:
    """Train through the CLI; config (8 rows held out, 4 for grpo) in tmp_path/config.yaml, the run in tmp_path/run."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if objective["name"] == "grpo":
        objective, rows, held = grpo_objective(tmp_path), rows or prompt_rows(), 4
        train = {**GRPO_TRAIN, "learning_rate": RATE["grpo"], **train}
    else:
        held = 8
    data = {"train": str(write_jsonl(tmp_path / "pairs.jsonl", rows or pair_rows())), "val_size": held}
    data["format"] = "prompts" if objective["name"] == "grpo" else "auto" if objective["name"] == "kto" else "pairs"
    schedule = {**QUICK, "learning_rate": RATE[method["name"]], **train}
    config = write_config(tmp_path, model_dir, method=method, train=schedule, data=data, objective=objective)
    result = run_cli(["train", str(config), "forgetting.enabled=false"])
    assert result.exit_code == 0, result.output
    (tmp_path / "output.txt").write_text(result.output)  # what the command said, for tests that read it
    return tmp_path / "run"


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("method", [LORA, FULL], ids=["lora", "full"])
def test_grpo_raises_the_held_out_reward(tmp_path, tiny_model_dir, method):
    run = aligned_run(
        tmp_path, tiny_model_dir, {"name": "grpo"}, method, learning_rate=RATE["grpo"] / (1 if method is LORA else 10)
    )
    held_out = metrics(run)["preference"]
    assert held_out["rows"] == 4 and set(held_out["before"]["by_reward"]) == {"shorter"}
    assert held_out["after"]["reward"]["mean"] > held_out["before"]["reward"]["mean"], held_out
    assert metrics(run)["reference_batches_computed"] == 0  # beta 0: no reference at all


@pytest.mark.parametrize("method", [LORA, FULL], ids=["lora", "full"])
@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_each_objective_moves_held_out_preferences(tmp_path, tiny_model_dir, objective, method):
    run = aligned_run(tmp_path, tiny_model_dir, {"name": objective}, method)
    report = metrics(run)
    held_out = report["preference"]
    if objective == "kto":  # 8 pairs held out: 16 answers, each judged
        assert held_out["rows"] == 16 and report["data"]["desirable"] == report["data"]["undesirable"] == 32
        assert held_out["gap"] > 0, held_out  # desirable answers gained on undesirable ones
    else:
        assert held_out["rows"] == 8
        before, after = held_out["before"]["logprob_margin"], held_out["after"]["logprob_margin"]
        assert after["mean"] > before["mean"], held_out
        low, high = after["ci95"]
        assert low <= after["mean"] <= high
    if objective == "dpo":
        assert held_out["reward_margin"]["mean"] > 0 and held_out["reward_accuracy"]["mean"] > 0.5
    # ORPO has no reference model; DPO and KTO score theirs once, before the first step.
    assert (report["reference_batches_computed"] > 0) == (objective != "orpo")
    assert (run / ("adapter" if method is LORA else "model")).is_dir() and (run / "COMPLETE").is_file()


def test_reference_log_probs_are_computed_once_and_reused(tmp_path, tiny_model_dir):
    objective = {"name": "dpo", "beta": 0.2}
    first = aligned_run(tmp_path, tiny_model_dir, objective, LORA)
    assert metrics(first)["reference_batches_computed"] == 9  # 32 training rows in 4s, 8 held out in one batch
    weights = load_file(str(first / "adapter" / "adapter_model.safetensors"))

    # The same config again, over the finished run: the cache in preference_data/ is kept and read back.
    again = run_cli(
        ["train", str(tmp_path / "config.yaml"), "forgetting.enabled=false", "train.overwrite_output_dir=true"]
    )
    assert again.exit_code == 0, again.output
    assert metrics(first)["reference_batches_computed"] == 0 and "read from its cache" in again.output
    rerun = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(weights[k], rerun[k]) for k in weights), "cached reference log-probs changed training"

    # Other rows: a new key, computed again.
    changed = aligned_run(tmp_path / "changed", tiny_model_dir, objective, LORA, rows=pair_rows(seed=1))
    assert metrics(changed)["reference_batches_computed"] == 9


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto", "grpo"])
def test_kill_minus_nine_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir, objective):
    straight = aligned_run(tmp_path / "a", tiny_model_dir, {"name": objective}, LORA, save_steps=2)

    # The same run in b/, killed after step 5 (checkpoints at 2 and 4), then resumed.
    killed_dir = tmp_path / "b"
    killed_dir.mkdir()
    for name in ("pairs.jsonl", "rewards.py"):
        if (tmp_path / "a" / name).is_file():
            (killed_dir / name).write_text((tmp_path / "a" / name).read_text())
    config = killed_dir / "config.yaml"
    settings = (tmp_path / "a" / "config.yaml").read_text().replace(str(tmp_path / "a"), str(killed_dir))
    config.write_text(settings.replace("max_items: 12", "enabled: false"))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(config), "5"], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed_dir / "run" / "COMPLETE").exists()

    resumed = run_cli(["train", str(config), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from checkpoint-4" in resumed.output
    if objective in ("dpo", "kto"):  # the reference log-probs came back from the cache the killed run wrote
        assert metrics(killed_dir / "run")["reference_batches_computed"] == 0
    a = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(killed_dir / "run" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{objective}: resumed weights differ"


def test_an_aligned_run_generates_and_evaluates_like_any_run(tmp_path, tiny_model_dir):
    run = aligned_run(tmp_path, tiny_model_dir, {"name": "dpo"}, LORA)
    result = run_cli(["generate", str(run), "What is 2+3?", "--max-new-tokens", "4"])
    assert result.exit_code == 0 and result.output.strip(), result.output
    tests = write_jsonl(
        tmp_path / "test.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pair_rows(6)]
    )
    out = tmp_path / "eval"
    evaluated = run_cli(["eval", str(run), "--data", str(tests), "--metrics", "exact_match", "--output-dir", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "exact_match" in json.loads((out / "metrics.json").read_text())["metrics"]


def test_auto_checkpointing_plans_the_objective_and_changes_no_result(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from tests.test_activation_checkpointing import LayerCalls
    from tunelab import config, train
    from tunelab.planning import machine

    def dpo(folder: Path) -> tuple[Path, LayerCalls]:
        aligned_run(folder / "setup", tiny_model_dir, {"name": "dpo"}, LORA, max_steps=1)  # writes the config
        cfg = config.load(folder / "setup" / "config.yaml", [f"train.output_dir={folder / 'run'}"])
        calls = LayerCalls()
        return train.run(cfg, callbacks=(calls,)).run_dir, calls

    roomy, roomy_calls = dpo(tmp_path / "roomy")
    monkeypatch.setattr(machine, "available_memory", lambda device: (2**20, "RAM"))  # a 1 MB machine
    tight, tight_calls = dpo(tmp_path / "tight")
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "activation checkpointing: full. This run's peak is estimated at" in said
    # One policy forward a step (the reference was precomputed), run again in the backward pass when checkpointed.
    assert roomy_calls.per_layer_and_step(2) == 1 and tight_calls.per_layer_and_step(2) == 2
    a = load_file(str(roomy / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tight / "adapter" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), "recomputing activations changed the weights"
