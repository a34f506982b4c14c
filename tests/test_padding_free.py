"""Padding-free (packed) batches give the padded batch's logits, loss and gradients, and the same training."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

from tests.helpers import memorizable_rows, train_and_read_losses, write_config, write_jsonl
from tunelab import config, data
from tunelab.training import padding_free
from tunelab.training.loss import trained_positions_loss


def varied_data(tmp_path) -> dict:
    """Rows of different lengths, so the padded batch has padding."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = [{**r, "prompt": r["prompt"] + " Be quick." * i} for i, r in enumerate(memorizable_rows())]
    return {"train": str(write_jsonl(tmp_path / "varied.jsonl", rows))}


@pytest.fixture(scope="module")
def rows(tmp_path_factory, tiny_model_dir, smol_tokenizer):
    tmp = tmp_path_factory.mktemp("packing")
    cfg = config.load(write_config(tmp, tiny_model_dir, data=varied_data(tmp)))
    built = data.build(cfg, smol_tokenizer).train
    picked = [built[i] for i in range(4)]
    assert len({len(r["input_ids"]) for r in picked}) > 1  # rows of different lengths: padding in the padded batch
    return picked


@pytest.fixture(scope="module")
def padded(rows, smol_tokenizer):
    return DataCollatorForSeq2Seq(smol_tokenizer, padding=True, label_pad_token_id=-100)(rows)


@pytest.fixture(scope="module")
def packed(rows):
    return padding_free.collator()(rows)


def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_batch_has_no_padding_and_restarts_positions(rows, packed):
    lengths = [len(r["input_ids"]) for r in rows]
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["cu_seq_lens_q"].tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    starts = packed["cu_seq_lens_q"][:-1]
    assert (packed["position_ids"][0, starts] == 0).all() and (packed["labels"][0, starts] == -100).all()


def test_packed_logits_equal_the_padded_ones(tiny_model_dir, rows, padded, packed):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        reference = model(**padded).logits
        with padding_free.attention(model):
            ours = model(**packed).logits[0]
    bounds = packed["cu_seq_lens_q"].tolist()
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        torch.testing.assert_close(ours[s:e], reference[i, : e - s], rtol=1e-4, atol=1e-5)
    assert model.config._attn_implementation == "sdpa"  # put back after the block


def test_without_varlen_attention_transformers_masks_the_packed_rows_too(tiny_model_dir, padded, packed):
    """The fallback (a model or run outside the block) is slower, not wrong."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert packed["use_cache"] is False  # with a cache transformers would not mask the rows apart
    with torch.no_grad():
        torch.testing.assert_close(model(**packed).loss, model(**padded).loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparse_head", [False, True])
def test_packed_loss_and_gradients_equal_the_padded_ones(tiny_model_dir, padded, packed, sparse_head):
    model = lora_model(tiny_model_dir).train()
    loss = (lambda m, b: trained_positions_loss(m, b)) if sparse_head else (lambda m, b: m(**b).loss)
    reference = loss(model, padded)
    reference.backward()
    expected = grads(model)
    model.zero_grad()
    with padding_free.attention(model):
        ours = loss(model, packed)
        ours.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    got = grads(model)
    assert got.keys() == expected.keys() and len(got) > 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_training_packed_matches_training_padded(tmp_path, tiny_model_dir):
    """The same run with padding_free on and off: the same losses step by step."""
    losses = {}
    for packed in (True, False):
        sub = tmp_path / str(packed)
        train = {"max_steps": 4, "learning_rate": 1e-2, "per_device_train_batch_size": 3, "padding_free": packed}
        losses[packed] = train_and_read_losses(sub, tiny_model_dir, train=train, data=varied_data(sub))
        saved = json.loads((sub / "run" / "adapter" / "adapter_config.json").read_text())
        assert "tunelab" not in json.dumps(saved)  # nothing saved names our attention
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_padding_free_follows_the_attention_the_model_runs(tiny_model_dir):
    """auto: on for SDPA (our row-by-row kernel inside `attention`) and flash attention (transformers packs
    natively, left untouched); off for eager attention, where `padding_free: true` is a clean error."""
    from tunelab import methods
    from tunelab.config.schema import TrainConfig
    from tunelab.errors import ConfigError
    from tunelab.training.trainer import use_padding_free

    lora, auto = methods.get("lora"), TrainConfig(output_dir="x")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert use_padding_free(auto, model, lora)
    with padding_free.attention(model):
        assert model.config._attn_implementation == padding_free.ATTENTION
    assert model.config._attn_implementation == "sdpa"

    model.config._attn_implementation = "flash_attention_2"  # as loaded on a GPU with flash-attn
    assert use_padding_free(auto, model, lora)
    with padding_free.attention(model):
        assert model.config._attn_implementation == "flash_attention_2"

    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert not use_padding_free(auto, eager, lora)
    with pytest.raises(ConfigError, match="train.padding_free: true, but the model's attention is neither"):
        use_padding_free(TrainConfig(output_dir="x", padding_free=True), eager, lora)
