"""Soft prompts initialized from text start exactly where the frozen model would be after reading that text."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from transformers import AutoModelForCausalLM

from tunelab import methods
from tunelab.config.methods import MethodConfig, PrefixTuningMethod

TEXT = "Read the ticket, then answer."


def prepare(tiny_model_dir, smol_tokenizer, options):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    method_cfg = TypeAdapter(MethodConfig).validate_python(options)
    return methods.get(options["name"]).prepare(model, method_cfg, smol_tokenizer).eval()


def test_prefix_from_text_equals_base_model_after_reading_the_text(tiny_model_dir, smol_tokenizer):
    text_ids = smol_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    peft_model = prepare(
        tiny_model_dir,
        smol_tokenizer,
        {"name": "prefix_tuning", "num_virtual_tokens": len(text_ids), "init_text": TEXT},
    )
    query = smol_tokenizer("Where is my parcel?", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        prefixed = peft_model(**query).logits[0]
        with methods.get("prefix_tuning").disable(peft_model):
            whole = peft_model(input_ids=torch.tensor([text_ids + query["input_ids"][0].tolist()])).logits[0]
    # the prefix holds the text's keys/values: the query's logits are those of text + query read together
    torch.testing.assert_close(prefixed, whole[len(text_ids) :], atol=1e-5, rtol=1e-4)


def test_prefix_random_init_when_text_is_null(tiny_model_dir, smol_tokenizer):
    seeded = prepare(tiny_model_dir, smol_tokenizer, {"name": "prefix_tuning", "num_virtual_tokens": 4})
    random = prepare(
        tiny_model_dir, smol_tokenizer, {"name": "prefix_tuning", "num_virtual_tokens": 4, "init_text": None}
    )
    weight = lambda m: m.prompt_encoder["default"].embedding.weight  # noqa: E731
    assert not torch.equal(weight(seeded), weight(random))
    assert weight(random).std().item() == pytest.approx(1.0, abs=0.3)  # nn.Embedding's N(0, 1)


def test_prefix_text_with_projection_is_a_config_error():
    with pytest.raises(ValidationError, match="projection: true set init_text: null"):
        PrefixTuningMethod(name="prefix_tuning", projection=True, init_text="Hello")
    assert PrefixTuningMethod(name="prefix_tuning", projection=True).projection  # the default text is not used
