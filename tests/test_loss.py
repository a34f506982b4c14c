"""The trained-positions loss equals the model's own loss and gradients, plain and under peft LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, GPT2Config, GPT2LMHeadModel

from tests.helpers import train_and_read_losses, write_config
from tunelab import config, data
from tunelab.loss import supports_sparse_head, trained_positions_loss


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_model_dir, smol_tokenizer):
    tmp = tmp_path_factory.mktemp("loss")
    cfg = config.load(write_config(tmp, tiny_model_dir))
    rows = data.build(cfg, smol_tokenizer).train
    collate = DataCollatorForSeq2Seq(smol_tokenizer, padding=True, label_pad_token_id=-100)
    return collate([rows[i] for i in range(len(rows))])  # rows of different lengths: right padding inside


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_same_loss_and_gradients_as_the_model(tiny_model_dir, batch, lora):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        )
    model.train()
    reference = model(**batch).loss
    reference.backward()
    expected = grads(model)
    model.zero_grad()
    ours = trained_positions_loss(model, batch)
    ours.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    got = grads(model)
    assert got.keys() == expected.keys() and got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_divides_by_the_accumulated_token_count_like_transformers(tiny_model_dir, batch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n = torch.tensor(57)
    torch.testing.assert_close(trained_positions_loss(model, batch, n), model(**batch, num_items_in_batch=n).loss)


def test_only_plain_head_architectures_use_it(tiny_model_dir):
    assert supports_sparse_head(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    assert not supports_sparse_head(gpt2)


def test_training_with_it_matches_training_without(tmp_path, tiny_model_dir):
    """Same run twice, sparse head on and off, with gradient accumulation: same losses, same weights."""
    results = {}
    for sparse in (True, False):
        sub = tmp_path / str(sparse)
        train = {"max_steps": 6, "learning_rate": 1e-2, "gradient_accumulation_steps": 2, "sparse_lm_head": sparse}
        train["per_device_train_batch_size"] = 3
        losses = train_and_read_losses(sub, tiny_model_dir, method={"name": "full"}, train=train)
        results[sparse] = (losses, AutoModelForCausalLM.from_pretrained(sub / "run" / "model").state_dict())
    (loss_on, w_on), (loss_off, w_off) = results[True], results[False]
    assert loss_on == pytest.approx(loss_off, rel=1e-4)
    for name in w_off:
        torch.testing.assert_close(w_on[name], w_off[name], rtol=1e-3, atol=1e-5, msg=name)
