"""train.activation_checkpointing: the same training with layers recomputed in the backward pass; `auto` turns it
on only when the planner's memory estimate does not fit this machine."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from tests.helpers import write_config
from tunelab import config, train
from tunelab.planning import machine


class LayerCalls(TrainerCallback):
    """Counts runs of each decoder layer's MLP per training step: 2 when the backward recomputes the layers. It wraps
    the MLP instances' `forward`: torch's checkpoint recomputes without firing module hooks, so hooks count 1 either
    way."""

    def __init__(self) -> None:
        self.calls = 0
        self.steps = 0
        self.in_step = False  # evaluations and the retention probe run the layers too; they do not count

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer in inner.get_decoder().layers:
            layer.mlp.forward = self.counted(layer.mlp.forward)

    def counted(self, forward):
        def run(*args, **kwargs):
            self.calls += self.in_step
            return forward(*args, **kwargs)

        return run

    def on_step_begin(self, args, state, control, **kwargs):
        self.in_step = True

    def on_step_end(self, args, state, control, **kwargs):
        self.in_step = False
        self.steps += 1

    def per_layer_and_step(self, layers: int) -> float:
        return self.calls / (layers * self.steps)


def run(tmp_path, model_dir, method: str, setting) -> tuple[list[float], LayerCalls]:
    tmp_path.mkdir(parents=True)
    train_cfg = {"max_steps": 4, "learning_rate": 1e-2, "eval_strategy": "no", "save_strategy": "no"}
    cfg = config.load(
        write_config(tmp_path, model_dir, method={"name": method}, train=train_cfg),
        [f"train.activation_checkpointing={setting}"],
    )
    calls = LayerCalls()
    run_dir = train.run(cfg, callbacks=(calls,)).run_dir
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h], calls


@pytest.mark.parametrize("method", ["lora", "full"])
def test_checkpointing_recomputes_the_layers_and_trains_the_same(tmp_path, tiny_model_dir, method):
    kept, kept_calls = run(tmp_path / "kept", tiny_model_dir, method, "false")
    recomputed, recomputed_calls = run(tmp_path / "recomputed", tiny_model_dir, method, "true")
    assert kept_calls.per_layer_and_step(2) == 1
    assert recomputed_calls.per_layer_and_step(2) == 2  # each layer runs again in the backward pass
    assert recomputed == pytest.approx(kept, rel=1e-5)


def test_auto_checkpoints_only_when_the_estimate_does_not_fit(tmp_path, tiny_model_dir, monkeypatch, capsys):
    _, roomy = run(tmp_path / "roomy", tiny_model_dir, "lora", "auto")
    assert roomy.per_layer_and_step(2) == 1
    monkeypatch.setattr(machine, "available_memory", lambda device: (2**20, "RAM"))  # a 1 MB machine
    _, tight = run(tmp_path / "tight", tiny_model_dir, "lora", "auto")
    assert tight.per_layer_and_step(2) == 2
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "activation checkpointing on: this run's peak is estimated at" in said
