"""Forgetting mitigations on the weights: L2-SP (forgetting.l2_to_base) and merging back (forgetting.merge_back).
The distance is the real ||W - W_base||^2, moving back scales the change exactly, the penalty keeps a run nearer
its base, and methods without a plain change to the base are refused before the model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.helpers import write_config, write_jsonl
from tunelab import config, methods, models, train
from tunelab.config.methods import LoraOptions
from tunelab.errors import ConfigError
from tunelab.training.anchor import BaseAnchor, lora_pairs

ROWS = [{"prompt": f"Which bay holds part {i}?", "completion": f"Part {i} is in bay {i % 3}."} for i in range(12)]


def lora_model(model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    options = LoraOptions(r=4, alpha=8, target_modules="all-linear")
    model = methods.get("lora").prepare(model, options, None)
    torch.manual_seed(1)
    for pair in lora_pairs(model):
        pair.b.data.normal_()  # peft starts B at zero: a change to measure
    return model


def deltas(model) -> list[torch.Tensor]:
    """Each adapted layer's change to its base weight, as peft computes it for merging."""
    return [m.get_delta_weight("default") for m in model.modules() if hasattr(m, "get_delta_weight")]


def test_the_lora_distance_is_the_squared_norm_of_the_merged_change(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    expected = sum((d.float() ** 2).sum() for d in deltas(model))
    assert BaseAnchor.of(model).squared_distance(model).item() == pytest.approx(expected.item(), rel=1e-4)


def test_moving_back_scales_the_lora_change(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    before = deltas(model)
    BaseAnchor.of(model).move_back(model, 0.3)
    for old, new in zip(before, deltas(model), strict=True):
        torch.testing.assert_close(new, 0.7 * old)


def test_full_fine_tuning_is_measured_and_moved_back_against_a_copy_of_the_start(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    anchor = BaseAnchor.of(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    n_weights = sum(p.numel() for p in model.parameters())
    assert anchor.squared_distance(model).item() == pytest.approx(n_weights * 1e-4, rel=1e-3)
    anchor.move_back(model, 0.5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, start[name] + 0.005)


def run_config(tmp_path: Path, model_dir: Path, *overrides: str, method: dict | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train_file = write_jsonl(tmp_path / "train.jsonl", ROWS)
    schedule = {"max_steps": 8, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "save_strategy": "no"}
    data = {"train": str(train_file), "val_size": 3}
    path = write_config(tmp_path, model_dir, method=method or {"name": "lora", "r": 4}, train=schedule, data=data)
    return config.load(path, ["forgetting.enabled=false", f"train.output_dir={tmp_path / 'run'}", *overrides])


def adapter_b(result) -> dict[str, torch.Tensor]:
    weights = load_file(result.artifact_dir / "adapter_model.safetensors")
    return {k: v for k, v in weights.items() if "lora_B" in k}


def adapter_distance(result) -> float:
    weights = load_file(result.artifact_dir / "adapter_model.safetensors")
    total = 0.0
    for name, b in weights.items():
        if "lora_B" in name:
            a = weights[name.replace("lora_B", "lora_A")]
            total += float(((b @ a) ** 2).sum())
    return total


def test_l2_to_base_keeps_a_run_nearer_its_base(tmp_path, tiny_model_dir):
    plain = train.run(run_config(tmp_path / "plain", tiny_model_dir))
    anchored = train.run(run_config(tmp_path / "anchored", tiny_model_dir, "forgetting.l2_to_base=10"))
    assert adapter_distance(anchored) < 0.5 * adapter_distance(plain)
    assert anchored.metrics["train"]["train_loss"] > plain.metrics["train"]["train_loss"]  # the penalty counts


def test_merge_back_saves_the_scaled_adapter_and_evaluates_it(tmp_path, tiny_model_dir):
    plain = train.run(run_config(tmp_path / "plain", tiny_model_dir))
    merged = train.run(run_config(tmp_path / "merged", tiny_model_dir, "forgetting.merge_back=0.3"))
    plain_b, merged_b = adapter_b(plain), adapter_b(merged)
    assert plain_b.keys() == merged_b.keys()
    for name, b in plain_b.items():
        torch.testing.assert_close(merged_b[name], 0.7 * b, rtol=1e-4, atol=1e-6)
    # The final evaluation is of the merged weights, not the last evaluation during training.
    assert merged.metrics["eval"]["eval_loss"] != pytest.approx(plain.metrics["eval"]["eval_loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"name": "prompt_tuning"}, "forgetting.merge_back: method prompt_tuning has no plain change to the base"),
        ({"name": "lora", "use_dora": True}, "forgetting.merge_back: method lora with use_dora has no plain change"),
    ],
)
def test_a_method_without_a_plain_change_is_refused_before_loading(
    tmp_path, tiny_model_dir, monkeypatch, method, message
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(models, "load_model", no_loading)
    cfg = run_config(tmp_path, tiny_model_dir, "forgetting.merge_back=0.3", method=method)
    with pytest.raises(ConfigError) as err:
        train.run(cfg)
    assert message in str(err.value)


def test_merge_back_of_one_or_more_is_a_config_error(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="forgetting.merge_back"):
        run_config(tmp_path, tiny_model_dir, "forgetting.merge_back=1")


def test_the_penalty_counts_once_per_optimizer_step_with_gradient_accumulation(tmp_path, tiny_model_dir):
    def trained(folder: str, batch: int, accumulation: int) -> dict[str, torch.Tensor]:
        cfg = run_config(
            tmp_path / folder,
            tiny_model_dir,
            "forgetting.l2_to_base=10",
            f"train.per_device_train_batch_size={batch}",
            f"train.gradient_accumulation_steps={accumulation}",
            method={"name": "lora", "r": 4, "dropout": 0.0},
        )
        return load_file(train.run(cfg).artifact_dir / "adapter_model.safetensors")

    whole, accumulated = trained("whole", 4, 1), trained("accumulated", 2, 2)
    for name, weight in whole.items():
        torch.testing.assert_close(accumulated[name], weight, rtol=1e-4, atol=1e-5)
