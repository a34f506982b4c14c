"""Likelihood scoring on the tiny random Llama, checked against log-probabilities computed by hand from logits."""

from __future__ import annotations

import math

import pytest
import torch

from tunelab.evaluation.likelihood import (
    MC_STYLES,
    MCItem,
    encode_continuation,
    multiple_choice,
    perplexity,
    perplexity_from_examples,
)

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world", "A much longer text, " * 6]
ITEMS = [
    MCItem("What is the capital of France?", ["Berlin", "Paris", "Rome", "Madrid"], 1),
    MCItem("2 + 2 =", ["4", "22"], 0),
    MCItem("Which animal barks?", ["a cat that meows loudly", "dog"], 1),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def hand_nll(model, ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Summed NLL of the labelled tokens of one unpadded sequence, one position at a time."""
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    scored = [i for i in range(1, len(ids)) if labels[i] != -100]
    return -sum(logprobs[i - 1, labels[i]].item() for i in scored), len(scored)


def test_perplexity_of_a_text_is_exp_of_its_mean_token_nll(tiny):
    model, tok = tiny
    ids = tok(TEXTS[0])["input_ids"]
    total, count = hand_nll(model, ids, ids)
    scores = perplexity(model, tok, TEXTS[:1])
    assert scores["tokens"] == count == len(ids) - 1  # no BOS: the first token is context only
    assert scores["nll_per_token"] == pytest.approx(total / count, rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert scores["truncated"] == 0


def test_perplexity_is_token_weighted_not_a_mean_of_texts(tiny):
    model, tok = tiny
    per_text = [hand_nll(model, ids, ids) for ids in (tok(t)["input_ids"] for t in TEXTS)]
    pooled = math.exp(sum(s for s, _ in per_text) / sum(n for _, n in per_text))
    assert perplexity(model, tok, TEXTS, batch_size=2)["perplexity"] == pytest.approx(pooled, rel=1e-5)
    mean_of_texts = sum(math.exp(s / n) for s, n in per_text) / len(per_text)
    assert pooled != pytest.approx(mean_of_texts, rel=1e-3)


def test_perplexity_truncates_to_max_length(tiny):
    model, tok = tiny
    ids = tok(TEXTS[2])["input_ids"][:5]
    total, count = hand_nll(model, ids, ids)
    scores = perplexity(model, tok, TEXTS[2:], max_length=5)
    assert (scores["tokens"], scores["truncated"]) == (4, 1)
    assert scores["nll_per_token"] == pytest.approx(total / count, rel=1e-5)


def masked_examples(tok) -> list[dict]:
    """Prompt tokens masked with -100, as the training data builds them."""
    examples = []
    for prompt, answer in [("Q: colour of the sky?", " blue"), ("Q: two plus two?", " four, obviously"), ("Hi", "!")]:
        prompt_ids, ids = tok(prompt)["input_ids"], tok(prompt + answer)["input_ids"]
        examples.append({"input_ids": ids, "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids) :]})
    return examples


def test_perplexity_from_examples_matches_hand_sums_and_the_model_loss(tiny):
    model, tok = tiny
    examples = masked_examples(tok)
    sums = [hand_nll(model, ex["input_ids"], ex["labels"]) for ex in examples]
    expected = sum(s for s, _ in sums) / sum(n for _, n in sums)
    scores = perplexity_from_examples(model, examples, batch_size=2)
    assert scores["tokens"] == sum(n for _, n in sums)
    assert scores["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    # The model's own loss over one padded batch is token-weighted too: the Trainer's eval_loss with one batch.
    lengths = [len(ex["input_ids"]) for ex in examples]
    pads = [max(lengths) - n for n in lengths]
    ids = torch.tensor([ex["input_ids"] + [0] * pad for ex, pad in zip(examples, pads, strict=True)])
    labels = torch.tensor([ex["labels"] + [-100] * pad for ex, pad in zip(examples, pads, strict=True)])
    mask = torch.tensor([[1] * n + [0] * pad for n, pad in zip(lengths, pads, strict=True)])
    with torch.no_grad():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert scores["nll_per_token"] == pytest.approx(loss.item(), rel=1e-5)


def test_batched_equals_one_by_one(tiny):
    model, tok = tiny
    examples = masked_examples(tok)
    one = perplexity_from_examples(model, examples, batch_size=1)
    assert perplexity_from_examples(model, examples, batch_size=3)["nll_per_token"] == pytest.approx(
        one["nll_per_token"], abs=1e-5
    )
    for style in MC_STYLES:
        single = multiple_choice(model, tok, ITEMS, batch_size=1, style=style)
        batched = multiple_choice(model, tok, ITEMS, batch_size=8, style=style)
        assert batched.chosen == single.chosen
        for got, want in zip(batched.loglikelihoods, single.loglikelihoods, strict=True):
            assert got == pytest.approx(want, abs=1e-5)


def test_continuation_tokens_are_exactly_the_choice_tokens(tiny):
    _, tok = tiny
    prompt, continuations = MC_STYLES["letters"](ITEMS[0])
    assert prompt == "What is the capital of France?\nA. Berlin\nB. Paris\nC. Rome\nD. Madrid\nAnswer:"
    context, scored = encode_continuation(tok, prompt, continuations[1])
    assert context == tok(prompt)["input_ids"]
    assert scored == tok(" B", add_special_tokens=False)["input_ids"]
    # A trailing space in the prompt belongs to the answer: "Answer: " + "B" is scored as the token " B".
    assert encode_continuation(tok, prompt + " ", "B") == (context, scored)
    context, scored = encode_continuation(tok, "Which animal barks?\nAnswer:", " a cat that meows loudly")
    assert scored == tok(" a cat that meows loudly", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("style", sorted(MC_STYLES))
def test_multiple_choice_is_the_argmax_of_hand_loglikelihoods(tiny, style):
    model, tok = tiny
    result = multiple_choice(model, tok, ITEMS, style=style)
    for item, lls, chosen, chosen_norm in zip(
        ITEMS, result.loglikelihoods, result.chosen, result.chosen_norm, strict=True
    ):
        prompt, continuations = MC_STYLES[style](item)
        prompt_ids = tok(prompt)["input_ids"]
        hand = []
        for continuation in continuations:
            ids = tok(prompt + continuation)["input_ids"]
            hand.append(-hand_nll(model, ids, [-100] * len(prompt_ids) + ids[len(prompt_ids) :])[0])
        assert lls == pytest.approx(hand, abs=1e-5)
        assert chosen == max(range(len(hand)), key=hand.__getitem__)
        per_char = [ll / len(c) for ll, c in zip(hand, continuations, strict=True)]
        assert chosen_norm == max(range(len(per_char)), key=per_char.__getitem__)
    answers = [item.answer for item in ITEMS]
    assert result.accuracy == pytest.approx(
        sum(c == a for c, a in zip(result.chosen, answers, strict=True)) / len(ITEMS)
    )


def test_multiple_choice_follows_a_forced_answer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = MCItem("Pick the third letter.", ["w", "x", "y", "z"], 2)
    prompt, _ = MC_STYLES["letters"](item)
    with torch.no_grad():
        hidden = model.model(torch.tensor([tok(prompt)["input_ids"]])).last_hidden_state[0, -1]
        # Untie the output layer from the embeddings, then raise the logit of " C" after the prompt by 50.
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.clone())
        (letter_c,) = tok(" C", add_special_tokens=False)["input_ids"]
        model.lm_head.weight[letter_c] += 50 * hidden / hidden.dot(hidden)
    result = multiple_choice(model, tok, [item, MCItem("Pick the third letter.", ["w", "x", "y", "z"], 0)])
    assert result.chosen == [2, 2]
    assert result.accuracy == 0.5
    assert result.loglikelihoods[0][2] > -1e-3  # nearly all probability mass on " C"


def test_scoring_leaves_a_training_model_training(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    perplexity(model, tok, TEXTS[:1])
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_misuse_is_a_value_error(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="unknown multiple-choice style 'mmlu'"):
        multiple_choice(model, tok, ITEMS, style="mmlu")
    with pytest.raises(ValueError, match="item 0: needs 2\\+ choices"):
        multiple_choice(model, tok, [MCItem("q", ["a", "b"], 2)])
    with pytest.raises(ValueError, match="2 input_ids but 1 labels"):
        perplexity_from_examples(model, [{"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="no tokens to score"):
        perplexity_from_examples(model, [{"input_ids": [5, 6, 7], "labels": [-100, -100, -100]}])
    with pytest.raises(ValueError, match="adds no tokens"):
        encode_continuation(tok, "Answer:", "")
