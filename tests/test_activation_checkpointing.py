"""train.activation_checkpointing: the same training with layers recomputed in the backward pass; selective
checkpointing keeps the matmul outputs (no matmul is recomputed) and exactly what the planner counts; `auto`
turns checkpointing on, selective first, only when the planner's memory estimate does not fit this machine."""

from __future__ import annotations

import collections
import functools
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
from transformers import LlamaForCausalLM, TrainerCallback

from tests.conftest import tiny_llama_config
from tests.helpers import write_config
from tunelab import config, methods, train
from tunelab.config.methods import LoraMethod
from tunelab.methods import lora
from tunelab.planning import machine, planner
from tunelab.planning.activations import BlockTensors, selective_block_saved_bytes
from tunelab.training import activation_checkpointing


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


# A sample, not the registry: checkpointing wraps the transformer blocks whatever the method, so one of each kind of
# model it wraps is enough (a peft-wrapped adapter model, a whole model that trains, a 4-bit quantized base); each
# case trains three times.
@pytest.mark.parametrize("method", ["lora", "full", "qlora"])
def test_checkpointing_recomputes_the_layers_and_trains_the_same(tmp_path, tiny_model_dir, tiny_model_dir_64, method):
    quantized = methods.get(method).quantized_linears
    model_dir = tiny_model_dir_64 if quantized else tiny_model_dir  # bitsandbytes' CPU kernels: >= 64 wide
    kept, kept_calls = run(tmp_path / "kept", model_dir, method, "false")
    assert kept_calls.per_layer_and_step(2) == 1
    for mode in ("true", "selective"):  # true: full checkpointing, as before the modes had names
        recomputed, recomputed_calls = run(tmp_path / mode, model_dir, method, mode)
        assert recomputed_calls.per_layer_and_step(2) == 2, mode  # each layer runs again in the backward pass
        assert recomputed == pytest.approx(kept, rel=1e-5), mode


def test_bool_settings_name_the_modes():
    def setting(value):
        return config.load(None, ["data.train=x.jsonl", f"train.activation_checkpointing={value}"]).train

    assert (setting("true").activation_checkpointing, setting("false").activation_checkpointing) == ("full", "off")


# ------------------------------------------------------------------ selective checkpointing, on a model whose
# projections are wide enough (hidden 128) for the policy to keep them


def wide_lora_model(mode: str, policy=None):
    torch.manual_seed(0)
    config_ = tiny_llama_config(hidden_size=128, intermediate_size=256, vocab_size=300)
    model = lora.prepare(LlamaForCausalLM(config_), LoraMethod(name="lora", r=4, alpha=8))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)  # non-zero, so the adapter's path carries gradient
    model.train()
    if policy is not None:  # the policy under test, wrapped to observe it
        context = functools.partial(create_selective_checkpoint_contexts, policy)
        model.activation_checkpointing_enable({"use_reentrant": False, "context_fn": context})
    else:
        activation_checkpointing.enable(model, mode)
    return model


class OpCounter(TorchDispatchMode):
    """Counts the aten ops a region runs."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func] += 1
        return func(*args, **(kwargs or {}))


def backward_ops_and_grads(model) -> tuple[collections.Counter, dict[str, torch.Tensor]]:
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    loss = model(input_ids=ids, labels=ids).loss
    with OpCounter() as counter:
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return counter.counts, grads


def test_selective_recomputes_the_cheap_ops_not_the_matmuls_and_gives_the_same_gradients():
    aten = torch.ops.aten
    ops, grads = {}, {}
    for mode in ("off", "selective", "full"):
        ops[mode], grads[mode] = backward_ops_and_grads(wide_lora_model(mode))
        for name, grad in grads[mode].items():
            torch.testing.assert_close(grad, grads["off"][name], rtol=1e-4, atol=1e-6, msg=f"{mode}: {name}")
    # The projections' forward matmul (tunelab's LoRA layer: the base matmul as an addmm onto B's product) runs
    # again in the backward pass under full checkpointing only: 6 of each layer's 7 (torch stops the recompute
    # once it has what the backward needs, and nothing needs down_proj's output), 2 layers.
    addmm = [ops[mode][aten.addmm.default] for mode in ("off", "selective", "full")]
    assert addmm[:2] == [0, 0] and addmm[2] >= 12
    # The activation function (a forward op: its backward is silu_backward) is recomputed by both, once per layer.
    assert [ops[mode][aten.silu.default] for mode in ("off", "selective", "full")] == [0, 2, 2]


def test_selective_keeps_what_the_planner_counts():
    """The bytes the policy keeps in the forward pass equal the planner's selective account, term by term:
    every projection's output (hidden 128 and up), LoRA A's rank-4 outputs, attention's output and log-sum-exp."""
    kept = []

    def observed(ctx, op, *args, **kwargs):
        decision = activation_checkpointing.policy(ctx, op, *args, **kwargs)
        if decision == CheckpointPolicy.MUST_SAVE and not ctx.is_recompute:
            outputs = ctx.op_output if isinstance(ctx.op_output, tuple) else (ctx.op_output,)
            kept.append(sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor)))
        return decision

    model = wide_lora_model("selective", policy=observed)
    backward_ops_and_grads(model)
    inner = model.get_base_model()
    tensors = BlockTensors(compute_bytes=4, residual_bytes=4, config=inner.config)
    per_token = sum(selective_block_saved_bytes(block, tensors) for block in inner.model.layers)
    assert sum(kept) == 2 * 40 * per_token


def test_auto_picks_the_least_recomputation_that_fits(tmp_path, tiny_model_dir, monkeypatch, capsys):
    _, roomy = run(tmp_path / "roomy", tiny_model_dir, "lora", "auto")
    assert roomy.per_layer_and_step(2) == 1
    monkeypatch.setattr(machine, "available_memory", lambda device: (2**20, "RAM"))  # a 1 MB machine
    _, tight = run(tmp_path / "tight", tiny_model_dir, "lora", "auto")
    assert tight.per_layer_and_step(2) == 2
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "activation checkpointing: full. This run's peak is estimated at" in said


def test_auto_takes_selective_when_that_fits(monkeypatch):
    from types import SimpleNamespace

    from tunelab.planning import checkpointing

    estimates = {"off": 10 * 2**30, "selective": 6 * 2**30}
    budget = 8 * 2**30
    monkeypatch.setattr(planner, "configured_memory", lambda *a, **k: (estimates, budget))
    cfg = config.load(None, ["data.train=x.jsonl"])
    data = SimpleNamespace(train={"input_ids": [[1, 2, 3]], "labels": [[-100, 2, 3]]})
    model = LlamaForCausalLM(tiny_llama_config())
    assert checkpointing.checkpointing_mode(cfg, model, data, torch.device("cpu"), torch.float32) == "selective"
    estimates["selective"] = 9 * 2**30
    assert checkpointing.checkpointing_mode(cfg, model, data, torch.device("cpu"), torch.float32) == "full"
    estimates["off"] = 7 * 2**30
    assert checkpointing.checkpointing_mode(cfg, model, data, torch.device("cpu"), torch.float32) == "off"
