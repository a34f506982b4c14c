"""The contract every fine-tuning method keeps, on the tiny model (hidden 32, intermediate 64, 2 layers, 4 heads
of 8, 2 KV heads; qlora on its hidden-64 sibling, 8 heads of 8, 4 KV heads): prepare -> one training step -> save
-> reload -> identical outputs; the trainable-parameter count derived by hand from that shape; base weights
untouched bit-for-bit where the method promises it; an adapter switched off gives the base model's outputs; of two
adapters on one base, the one activated gives its outputs. Every registered method must have its cases here."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import TypeAdapter

from tests.helpers import run_cli, write_config
from tunelab import methods
from tunelab.config.methods import METHOD_MODELS, MethodConfig
from tunelab.methods import adapter, qlora

HIDDEN, INTER, LAYERS, KV = 32, 64, 2, 16  # KV: 2 KV heads x head dim 8


def linears(hidden: int, inter: int, kv: int) -> list[tuple[int, int]]:
    """Per layer, (in, out) of q, k, v, o, gate, up, down."""
    return [
        (hidden, hidden),
        (hidden, kv),
        (hidden, kv),
        (hidden, hidden),
        (hidden, inter),
        (hidden, inter),
        (inter, hidden),
    ]


LINEARS = linears(HIDDEN, INTER, KV)
LINEARS_64 = linears(64, 128, 32)
LAST_LAYER = sum(i * o for i, o in LINEARS) + 2 * HIDDEN  # linears + its two norms

# method -> {case: (method options, trainable parameters by hand from the shape above)}; every registered method
# must be here (test_every_registered_method_has_cases), so a new one fails until it is described.
CASES = {
    "full": {"full": ({"name": "full"}, None)},  # None: every parameter
    "freeze": {"freeze": ({"name": "freeze", "trainable_layers": 1}, LAST_LAYER + HIDDEN)},  # + the final norm
    "lora": {
        "lora": ({"name": "lora", "r": 4}, LAYERS * sum(4 * (i + o) for i, o in LINEARS)),
        "dora": ({"name": "lora", "r": 4, "use_dora": True}, LAYERS * sum(4 * (i + o) + o for i, o in LINEARS)),
    },
    "qlora": {
        "qlora": ({"name": "qlora", "r": 4}, LAYERS * sum(4 * (i + o) for i, o in LINEARS_64)),
        "qlora8": ({"name": "qlora", "r": 4, "bits": 8}, LAYERS * sum(4 * (i + o) for i, o in LINEARS_64)),
    },
    # peft's Llama default: k_proj, v_proj (scaled at the output) and down_proj (at its input)
    "ia3": {"ia3": ({"name": "ia3"}, LAYERS * (KV + KV + INTER))},
    "prompt_tuning": {
        "prompt_tuning": (
            {"name": "prompt_tuning", "num_virtual_tokens": 5, "init_text": "Answer briefly"},
            5 * HIDDEN,
        )
    },
    "prefix_tuning": {"prefix_tuning": ({"name": "prefix_tuning", "num_virtual_tokens": 5}, 5 * LAYERS * 2 * KV)},
    "adapter": {
        "adapter": ({"name": "adapter", "reduction_factor": 4}, LAYERS * (HIDDEN * 8 + 8 + 8 * HIDDEN + HIDDEN)),
        "adapter_houlsby": (
            {"name": "adapter", "style": "houlsby", "reduction_factor": 4},
            2 * LAYERS * (HIDDEN * 8 + 8 + 8 * HIDDEN + HIDDEN),
        ),
    },
}
# The cases of every registered method, in registry order: case -> (options, trainable).
CASE = {case: described for name in methods.METHODS for case, described in CASES.get(name, {}).items()}


def test_every_registered_method_has_cases():
    assert CASES.keys() == methods.METHODS.keys()
    assert all(options["name"] == name for name, cases in CASES.items() for options, _ in cases.values())


def test_every_registered_method_has_an_options_class():
    assert METHOD_MODELS.keys() == methods.METHODS.keys()  # and no options class is left without its method


def method_config(options):
    return TypeAdapter(MethodConfig).validate_python(options)


def load_base(tiny_model_dir, options):
    from transformers import AutoModelForCausalLM

    method = methods.get(options["name"])
    load = method.load_options(method_config(options), torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, **load)
    return qlora.keep_one_layout(model)  # as qlora.prepare does first; a no-op without bitsandbytes' 4-bit layers


def model_dir_for(options, tiny_model_dir, tiny_model_dir_64):
    quantized = methods.get(options["name"]).quantized_linears
    return tiny_model_dir_64 if quantized else tiny_model_dir  # bitsandbytes' CPU kernels: >= 64 wide


def batch(tokenizer):
    texts = ["The secret word for sky is blue.", "Write one short line."]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc


def logits(model, enc):
    model.eval()
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return out[:, -enc["input_ids"].shape[1] :]  # soft prompts add their positions in front


def train_one_step(model, enc):
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model(**enc).loss.backward()
    optimizer.step()


def base_state(model):
    """Every base tensor (adapter weights excluded), cloned, by name; 4-bit weights as their dequantized values,
    since bitsandbytes re-lays out CPU 4-bit weights and their constants between inference and training."""
    skip = ("lora_", "ia3_", "prompt_encoder", adapter.SLOT)
    state = {k: v.clone() for k, v in model.state_dict().items() if not any(s in k for s in skip)}
    quantized = dequantized_4bit(model)
    if quantized:
        state = {k: v for k, v in state.items() if not any(k.startswith(q + ".weight") for q in quantized)}
    return state | {f"{name}.weight": w for name, w in quantized.items()}


def dequantized_4bit(model):
    import bitsandbytes as bnb

    return {
        name: bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).clone()
        for name, m in model.named_modules()
        if isinstance(m, bnb.nn.Linear4bit)
    }


def base_keys(state):
    # peft wraps targeted layers: "...q_proj.weight" becomes "...q_proj.base_layer.weight"
    return {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in state.items()}


@pytest.mark.parametrize("case", list(CASE))
def test_method_contract(case, tiny_model_dir, tiny_model_dir_64, smol_tokenizer, tmp_path):
    options, expected_trainable = CASE[case]
    tiny_model_dir = model_dir_for(options, tiny_model_dir, tiny_model_dir_64)
    method = methods.get(options["name"])
    cfg = method_config(options)
    enc = batch(smol_tokenizer)

    model = load_base(tiny_model_dir, options)
    base_logits = logits(model, enc)
    torch.manual_seed(0)
    model = method.prepare(model, cfg, smol_tokenizer)

    trainable, total = methods.count_parameters(model)
    assert trainable == (total if expected_trainable is None else expected_trainable)
    if method.artifact == "adapter":
        with method.disable(model):
            base_after_prepare = logits(model, enc)
        untrained_logits = logits(model, enc)
        method.save(model, tmp_path / "untrained")

    before = base_keys(base_state(model))
    train_one_step(model, enc)
    if method.artifact == "adapter":
        after = base_keys(base_state(model))
        assert after.keys() == before.keys()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed == [], f"base weights changed: {changed[:3]}"

    trained_logits = logits(model, enc)
    assert not torch.equal(trained_logits, base_logits), "one step must change the outputs"
    if method.artifact == "adapter":
        with method.disable(model):
            assert torch.equal(logits(model, enc), base_after_prepare)
        assert torch.equal(base_after_prepare, base_logits)

    method.save(model, tmp_path / "artifact")
    if method.artifact == "adapter":
        reloaded = method.attach(load_base(tiny_model_dir, options), tmp_path / "artifact", "default")
    else:
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "artifact", dtype=torch.float32)
    torch.testing.assert_close(logits(reloaded, enc), trained_logits, rtol=0, atol=1e-6)
    if method.artifact == "adapter":  # a second adapter on the same base; activate switches between the two
        reloaded = method.attach(reloaded, tmp_path / "untrained", "untrained")
        method.activate(reloaded, "untrained")
        torch.testing.assert_close(logits(reloaded, enc), untrained_logits, rtol=0, atol=1e-6)
        method.activate(reloaded, "default")
        torch.testing.assert_close(logits(reloaded, enc), trained_logits, rtol=0, atol=1e-6)


# method -> the case trained and generated from through the CLI, or None where another test does that
E2E = {
    "full": None,  # tests/test_cli.py (finished_run)
    "freeze": "freeze",
    "lora": None,  # tests/test_cli.py, tests/test_adapters.py
    "qlora": "qlora",
    "ia3": "ia3",
    "prompt_tuning": "prompt_tuning",
    "prefix_tuning": "prefix_tuning",
    "adapter": "adapter_houlsby",
}


def test_every_registered_method_says_how_it_runs_end_to_end():
    assert E2E.keys() == methods.METHODS.keys()
    assert all(case in CASES[name] for name, case in E2E.items() if case is not None)


@pytest.mark.parametrize("case", [E2E[name] for name in methods.METHODS if E2E.get(name)])
def test_every_method_trains_saves_and_generates_through_the_cli(case, tiny_model_dir, tiny_model_dir_64, tmp_path):
    """`tunelab train` then `tunelab generate` on the finished run, as a user would, for each method."""
    options, expected_trainable = CASE[case]
    model_dir = model_dir_for(options, tiny_model_dir, tiny_model_dir_64)
    cfg = write_config(tmp_path, model_dir, method=options, train={"max_steps": 2}, data=None)
    result = run_cli(["train", str(cfg), "forgetting.max_items=4"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert (run / "COMPLETE").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainable_params"] == (expected_trainable or metrics["total_params"])
    generated = run_cli(["generate", str(run), "The secret word for sky?", "--max-new-tokens", "4"])
    assert generated.exit_code == 0, generated.output
