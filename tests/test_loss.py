"""The trained-positions loss equals the model's own loss and gradients, plain and under peft LoRA, and the
chunked LM head + cross-entropy equals the whole-batch one."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, GPT2Config, GPT2LMHeadModel

from tests.helpers import train_and_read_losses, write_config
from tunelab import config, data
from tunelab.training.loss import ChunkedLinearCrossEntropy, supports_sparse_head, trained_positions_loss


@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_model_dir, smol_tokenizer):
    tmp = tmp_path_factory.mktemp("loss")
    cfg = config.load(write_config(tmp, tiny_model_dir))
    rows = data.build(cfg, smol_tokenizer).train
    collate = DataCollatorForSeq2Seq(smol_tokenizer, padding=True, label_pad_token_id=-100)
    return collate([rows[i] for i in range(len(rows))])  # rows of different lengths: right padding inside


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("lora", "chunk"), [(False, 256), (True, 256), (False, 5), (True, 1)])
def test_same_loss_and_gradients_as_the_model(tiny_model_dir, batch, lora, chunk):
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
    ours = trained_positions_loss(model, batch, chunk_tokens=chunk)
    ours.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    got = grads(model)
    assert got.keys() == expected.keys() and got
    for name in expected:
        # Gradients reach 0.35; summing chunk by chunk rounds differently by up to ~2e-6 (fp32), depending on the
        # random LoRA init (measured over 6 seeds), so 1e-6 was too tight. A wrong loss misses by ~1e-1.
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def whole_head_loss(hidden, weight, bias, targets):
    return torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(hidden, weight, bias).float(), targets, reduction="sum"
    )


@pytest.mark.parametrize("chunk", [1, 7, 40, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("trained_head", [False, True])
def test_chunked_head_equals_the_whole_head(chunk, dtype, trained_head):
    """Loss and the gradients of hidden states, weight and bias, chunk sizes that divide the 40 rows and not,
    a frozen head (LoRA) and a trained one (full fine-tuning), fp32 and bf16."""
    torch.manual_seed(0)
    hidden = torch.randn(40, 24, dtype=dtype)
    weight, bias = torch.randn(300, 24, dtype=dtype) * 0.3, torch.randn(300, dtype=dtype)
    targets = torch.randint(0, 300, (40,))
    results = []
    for loss_fn in (whole_head_loss, lambda *a: ChunkedLinearCrossEntropy.apply(*a, chunk)):
        leaves = [t.clone().requires_grad_(i == 0 or trained_head) for i, t in enumerate((hidden, weight, bias))]
        loss = loss_fn(*leaves, targets)
        (loss * 0.37).backward()  # a non-unit upstream gradient, as the division by the token count gives
        results.append((loss, *(t.grad for t in leaves)))
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    (want_loss, *want_grads), (got_loss, *got_grads) = results
    torch.testing.assert_close(got_loss, want_loss, **tolerance)
    for name, got, want in zip(("hidden", "weight", "bias"), got_grads, want_grads, strict=True):
        assert (got is None) == (want is None), name
        if want is not None:
            assert got.dtype == want.dtype, name
            torch.testing.assert_close(got, want, **tolerance, msg=name)


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
    # The chunked head sums the same products in another order; Adam divides each gradient by its own running
    # size, so on an element whose gradient is ~0 a rounding difference becomes part of a step (seen: one element
    # of 2,048 off by 2.5e-4 = 2.5% of one lr-sized step). A wrong gradient moves weights by ~lr per step.
    for name in w_off:
        torch.testing.assert_close(w_on[name], w_off[name], rtol=1e-3, atol=1e-3, msg=name)
