"""Training through the real CLI on the tiny random Llama: what each method changes, and the run dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers import memorizable_rows, run_cli, train_and_read_losses, write_config, write_jsonl


def state_dict_of(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_full_trains_every_weight_and_loss_falls(tmp_path, tiny_model_dir):
    cfg = write_config(
        tmp_path, tiny_model_dir, method={"name": "full"}, train={"max_steps": 40, "learning_rate": 2e-2}
    )
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    assert {"config.yaml", "versions.json", "model", "metrics.json", "trainer_state.json", "COMPLETE", "logs"} <= {
        p.name for p in run_dir.iterdir()
    }
    losses = [
        h["loss"] for h in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h
    ]
    assert losses[-1] < 0.5 * losses[0], losses
    before, after = state_dict_of(tiny_model_dir), state_dict_of(run_dir / "model")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainable_params"] == metrics["total_params"]
    assert list((run_dir / "logs").glob("events.out.tfevents.*")), "no TensorBoard event file"


def test_freeze_leaves_frozen_weights_bit_identical(tmp_path, tiny_model_dir):
    method = {"name": "freeze", "trainable_layers": 1, "train_norm": True}
    cfg = write_config(tmp_path, tiny_model_dir, method=method, train={"max_steps": 4, "learning_rate": 1e-2})
    assert run_cli(["train", str(cfg)]).exit_code == 0
    before, after = state_dict_of(tiny_model_dir), state_dict_of(tmp_path / "run" / "model")
    trained = {k for k in before if not torch.equal(before[k], after[k])}
    assert trained, "nothing trained"
    assert all(k.startswith(("model.layers.1.", "model.norm.")) for k in trained), trained
    assert any(k.startswith("model.layers.1.") for k in trained)
    frozen = [k for k in before if k.startswith(("model.layers.0.", "model.embed_tokens"))]
    assert frozen and not (set(frozen) & trained)


def test_lora_leaves_base_untouched_and_saves_only_the_adapter(tmp_path, tiny_model_dir):
    base_before = state_dict_of(tiny_model_dir)
    method = {"name": "lora", "r": 4, "alpha": 8}
    cfg = write_config(tmp_path, tiny_model_dir, method=method, train={"max_steps": 4, "learning_rate": 1e-2})
    assert run_cli(["train", str(cfg)]).exit_code == 0
    run_dir = tmp_path / "run"
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    assert not list(run_dir.rglob("model.safetensors")), "a LoRA run must not save the base weights"
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b), "lora_B still zero: the adapter did not train"
    # Every linear layer but the LM head is adapted: 7 per block (q, k, v, o, gate, up, down) x 2 blocks.
    assert len([k for k in saved if "lora_A" in k]) == 14
    assert all(torch.equal(v, state_dict_of(tiny_model_dir)[k]) for k, v in base_before.items())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = sum(v.numel() for v in saved.values())
    assert metrics["trainable_params"] == expected


def test_resolved_config_and_versions_are_recorded(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, method="lora", train={"max_steps": 1})
    assert run_cli(["train", str(cfg), "method.r=2", "train.seed=7"]).exit_code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["method"]["r"] == 2 and saved["train"]["seed"] == 7 and saved["method"]["alpha"] == 32
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert versions["torch"] == torch.__version__ and "transformers" in versions


def test_existing_run_is_not_overwritten(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, method="lora", train={"max_steps": 1})
    assert run_cli(["train", str(cfg)]).exit_code == 0
    marker = (tmp_path / "run" / "COMPLETE").read_text()
    again = run_cli(["train", str(cfg)])
    assert again.exit_code != 0 and "already holds a finished run" in again.output
    assert (tmp_path / "run" / "COMPLETE").read_text() == marker


def test_nan_loss_stops_the_run_naming_the_step(tmp_path, tiny_model_dir):
    # A learning rate this large with no clipping blows the weights up within a few steps.
    train = {"max_steps": 20, "learning_rate": 1e12, "max_grad_norm": 0.0, "logging_steps": 50}
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train=train)
    result = run_cli(["train", str(cfg)])
    assert result.exit_code != 0
    assert "the loss became" in result.output and "at step" in result.output
    assert not (tmp_path / "run" / "COMPLETE").exists()
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.learning_rat=1", "did you mean `train.learning_rate`"),
        ("method.trainable_layers=2", "`trainable_layers` is an option of method `freeze`, not `lora`"),
        ("method.name=lorra", "unknown method"),
        ("train.eval_strategy=steps", "needs eval_steps"),
    ],
)
def test_bad_config_is_a_clean_error(tmp_path, tiny_model_dir, override, fragment):
    cfg = write_config(tmp_path, tiny_model_dir, method="lora", train={"max_steps": 1})
    result = run_cli(["train", str(cfg), override])
    assert result.exit_code != 0
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists(), "nothing may be written for a bad config"


def test_bad_data_stops_before_the_model_loads(tmp_path, tiny_model_dir):
    rows = memorizable_rows()
    rows[3] = {"prompt": "", "completion": "x"}
    train_file = write_jsonl(tmp_path / "bad.jsonl", rows)
    cfg = write_config(tmp_path, tiny_model_dir, method="lora", data={"train": str(train_file)})
    result = run_cli(["train", str(cfg)])
    assert result.exit_code != 0
    assert "bad.jsonl:4" in result.output and "prompt" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_early_stopping_and_best_checkpoint(tmp_path, tiny_model_dir):
    """Validation answers contradict the training answers, so validation loss rises as training memorizes:
    early stopping ends the run, and the weights kept are those of the best evaluation."""
    rows = memorizable_rows()
    val = [{"prompt": r["prompt"], "completion": rows[(i + 1) % len(rows)]["completion"]} for i, r in enumerate(rows)]
    data = {
        "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
        "validation": str(write_jsonl(tmp_path / "val.jsonl", val)),
    }
    train = {
        "max_steps": 60,
        "learning_rate": 1e-2,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_strategy": "steps",
        "save_steps": 2,
        "save_total_limit": 2,
        "load_best_model_at_end": True,
        "early_stopping_patience": 2,
    }
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train=train, data=data)
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert state["global_step"] < 60, "early stopping did not stop the run"
    best = min(evals, key=lambda h: h["eval_loss"])
    assert state["best_global_step"] == best["step"]
    assert all(h["eval_loss"] >= best["eval_loss"] for h in evals[-2:])  # stopped after `patience` worse evals
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["eval"]["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-5)  # the best weights were kept


@pytest.mark.parametrize("switch", ["use_dora", "use_rslora"])
def test_lora_variants_train_and_save(tmp_path, tiny_model_dir, switch):
    method = {"name": "lora", "r": 4, "alpha": 8, switch: True}
    cfg = write_config(tmp_path, tiny_model_dir, method=method, train={"max_steps": 2, "learning_rate": 1e-2})
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    adapter_config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config[switch] is True
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    # DoRA adds a trained magnitude vector per adapted layer; rsLoRA changes only the scaling.
    assert any("magnitude" in k for k in saved) == (switch == "use_dora")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_bf16_training_reaches_the_fp32_evaluation_loss_within_one_percent(tmp_path, tiny_model_dir, method):
    """The bf16 path (bf16 matmuls; for lora a bf16 frozen base, for full fp32 master weights) trains to the same
    place as fp32: evaluation loss within 1% after the same rows and steps."""
    rows = memorizable_rows()
    # Validation asks the same things in other words (it may not repeat training rows).
    asked = [{"prompt": "Please: " + r["prompt"], "completion": r["completion"]} for r in rows]
    data = {
        "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
        "validation": str(write_jsonl(tmp_path / "val.jsonl", asked)),
    }
    # At 5e-2 the tiny model's LoRA run was unstable: fp32 alone moved 2% with the number of threads.
    train = {"max_steps": 30, "learning_rate": 1e-2, "eval_strategy": "no", "save_strategy": "no"}
    losses, steps = {}, {}
    for dtype in ("float32", "bfloat16"):
        sub = tmp_path / dtype
        config = {"method": {"name": method}, "train": train, "data": data, "model": {"dtype": dtype}}
        steps[dtype] = train_and_read_losses(sub, tiny_model_dir, **config)
        losses[dtype] = json.loads((sub / "run" / "metrics.json").read_text())["eval"]["eval_loss"]
    first = steps["float32"]
    assert sum(first[-5:]) / 5 < first[0], first  # it trained: not a comparison of two untouched models
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.01)
