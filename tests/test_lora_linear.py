"""tunelab's LoRA layer (scaling on the rank-r side, B's product added inside the base matmul) gives peft's
outputs and gradients, falls back to peft's forward outside the plain case, and saves an adapter plain peft
loads."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from tunelab.config.methods import LoraMethod
from tunelab.methods import lora
from tunelab.methods.lora_linear import AddmmLoraLinear


def lora_pair(model_dir, **options):
    """The same base and the same (non-zero) adapter weights, once through tunelab's prepare, once plain peft."""
    method = LoraMethod(name="lora", r=4, alpha=8, **options)
    ours = lora.prepare(AutoModelForCausalLM.from_pretrained(model_dir), method)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora.peft_config(method))
    torch.manual_seed(1)
    for name, param in ours.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    peft_model.load_state_dict(ours.state_dict())
    return ours, peft_model


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1000, (3, 11), generator=generator)


def lora_grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_plain_lora_uses_our_layer_and_matches_peft_outputs_and_gradients(tiny_model_dir):
    ours, peft_model = lora_pair(tiny_model_dir)
    layers = [m for m in ours.modules() if isinstance(m, AddmmLoraLinear)]
    assert len(layers) == 14, "every targeted linear layer of the 2-layer model (7 each)"
    assert not any(isinstance(m, AddmmLoraLinear) for m in peft_model.modules())
    ids = batch()
    for model in (ours, peft_model):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
    assert layers[0]._plain_adapter(torch.zeros(1, 32), (), {}) == "default"  # the fast path ran
    torch.testing.assert_close(ours(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    ours_grads, peft_grads = lora_grads(ours), lora_grads(peft_model)
    assert ours_grads.keys() == peft_grads.keys() and len(ours_grads) == 28
    for name, grad in ours_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grad, peft_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_outside_the_plain_case_peft_forward_runs(tiny_model_dir):
    ours, peft_model = lora_pair(tiny_model_dir, dropout=0.3)
    layer = next(m for m in ours.modules() if isinstance(m, AddmmLoraLinear))
    assert layer._plain_adapter(torch.zeros(1, 32), (), {}) is None  # dropout > 0
    ids = batch(1)
    for model in (ours, peft_model):
        model.eval()  # dropout off, so both forwards must agree
    torch.testing.assert_close(ours(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)

    ours, peft_model = lora_pair(tiny_model_dir)
    layer = next(m for m in ours.modules() if isinstance(m, AddmmLoraLinear))
    assert layer._plain_adapter(torch.zeros(1, 32, dtype=torch.bfloat16), (), {}) is None  # other dtype, no autocast
    with ours.disable_adapter(), peft_model.disable_adapter():
        assert layer._plain_adapter(torch.zeros(1, 32), (), {}) is None
        torch.testing.assert_close(ours(input_ids=ids).logits, peft_model(input_ids=ids).logits)
    ours.merge_adapter()
    peft_model.merge_adapter()
    assert layer._plain_adapter(torch.zeros(1, 32), (), {}) is None
    torch.testing.assert_close(ours(input_ids=ids).logits, peft_model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def saved_bytes_and_grads(model, ids):
    """Forward + backward of one batch under bf16 autocast: the bytes autograd saves (each storage once,
    parameters left out) and the LoRA weights' gradients."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return sum(seen.values()), lora_grads(model)


def test_mixed_precision_takes_our_path_saves_less_and_matches_fp32_as_closely_as_peft(tiny_model_dir):
    """A bf16 base with peft's fp32 adapter weights under autocast (how a bf16 run trains): our forward runs,
    A shares its input with the base matmul instead of keeping a cast copy, and the gradients are as close
    to an fp32 computation as peft's."""
    method = LoraMethod(name="lora", r=4, alpha=8)
    ours = lora.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16), method)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16), lora.peft_config(method)
    )
    reference = lora.prepare(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16), method)
    reference.float()  # the same bf16-rounded base weights, computed in fp32
    torch.manual_seed(1)
    for name, param in ours.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    peft_model.load_state_dict(ours.state_dict())
    reference.load_state_dict(ours.state_dict())
    layer = next(m for m in ours.modules() if isinstance(m, AddmmLoraLinear))
    assert layer.lora_A["default"].weight.dtype == torch.float32  # peft keeps adapter weights in fp32
    x = torch.zeros(1, 32, dtype=torch.bfloat16)
    assert layer._plain_adapter(x, (), {}) is None  # no autocast: the dtypes differ, peft's forward
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer._plain_adapter(x, (), {}) == "default"

    ids = batch(3)
    ours_saved, ours_grads = saved_bytes_and_grads(ours, ids)
    peft_saved, peft_grads = saved_bytes_and_grads(peft_model, ids)
    reference.train()
    reference(input_ids=ids, labels=ids).loss.backward()
    exact = lora_grads(reference)
    # per layer: q, k and v's A keep one input, not three; gate and up's one, not two; o_proj's A keeps
    # attention's output; 2 layers x 4 copies of [tokens x hidden 32] bf16
    assert peft_saved - ours_saved == 2 * 4 * ids.numel() * 32 * 2
    for name, grad in exact.items():
        ours_error = (ours_grads[name] - grad).norm() / grad.norm()
        peft_error = (peft_grads[name] - grad).norm() / grad.norm()
        assert ours_error < max(1.5 * peft_error, 0.01), name


@pytest.mark.parametrize("merge", [False, True])
def test_adapter_saved_from_our_layer_loads_in_plain_peft(tiny_model_dir, tmp_path, merge):
    ours, _ = lora_pair(tiny_model_dir)
    ours.eval()
    ids = batch(2)
    expected = ours(input_ids=ids).logits
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert not any("custom" in key for key in saved)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path)
    assert not any(isinstance(m, AddmmLoraLinear) for m in loaded.modules())
    model = loaded.merge_and_unload() if merge else loaded
    torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_model_with_subclassed_linear_layers_keeps_peft_layers(tiny_model_dir):
    """Quantized layers (bitsandbytes, GPTQ) subclass nn.Linear; peft must keep its own layers for them."""

    class QuantizedStandIn(torch.nn.Linear):
        pass

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.model.layers[0].mlp.down_proj.__class__ = QuantizedStandIn
    prepared = lora.prepare(model, LoraMethod(name="lora", r=4))
    assert not any(isinstance(m, AddmmLoraLinear) for m in prepared.modules())
    assert sum(1 for name, _ in prepared.named_parameters() if "lora_A" in name) == 14
