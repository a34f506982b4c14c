"""tunelab.inference.generation on the tiny random Llama (real SmolLM2 tokenizer and chat template), fp32 on CPU."""

from __future__ import annotations

import threading

import pytest
import torch

from tunelab.config.schema import ModelConfig
from tunelab.data.templates import render_prompt
from tunelab.inference.generation import Decoding, encode_prompt, generate, stream
from tunelab.models import load_model, load_tokenizer

PROMPTS = [
    "Hi",
    "What is the capital of France?",
    [{"role": "user", "content": "Write one long sentence about the sea, the sky and the wind, please."}],
    "2+2?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}],
]
GREEDY = Decoding(max_new_tokens=6)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    cfg = ModelConfig(name=str(tiny_model_dir), dtype="float32", device="cpu")
    model = load_model(cfg)
    # At its init scale (std 0.02) the tiny model echoes the prompt's last token ("\n") for every prompt,
    # which would hide order and padding bugs; larger weights make each prompt's continuation its own.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                scale = 1.0 if param is model.get_input_embeddings().weight else 3 * param.shape[1] ** -0.5
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model, load_tokenizer(cfg)


@pytest.fixture
def spy(tiny, monkeypatch):
    """Record each model.generate call's inputs and output."""
    model, _ = tiny
    calls = []
    real = model.generate

    def recording(**kwargs):
        out = real(**kwargs)
        calls.append({**kwargs, "out": out})
        return out

    monkeypatch.setattr(model, "generate", recording)
    return calls


def test_batched_equals_one_by_one_and_keeps_order(tiny):
    model, tok = tiny
    batched = generate(model, tok, PROMPTS, GREEDY, batch_size=3)
    single = [generate(model, tok, [p], GREEDY)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) == len(PROMPTS)  # each prompt gets its own text, so order errors show
    assert generate(model, tok, PROMPTS[::-1], GREEDY, batch_size=2) == single[::-1]


def test_left_padding_and_length_sorted_batches(tiny, spy):
    model, tok = tiny
    side = tok.padding_side
    generate(model, tok, PROMPTS, GREEDY, batch_size=2)
    assert tok.padding_side == side  # the shared tokenizer is never modified
    lengths = [len(encode_prompt(tok, p)) for p in PROMPTS]
    first = spy[0]
    assert first["input_ids"].shape == (2, max(lengths))  # the two longest prompts come first
    mask = first["attention_mask"]
    assert mask[:, -1].all() and not mask.all()  # real tokens end every row; padding sits on the left
    short = int(mask.sum(1).argmin())
    pad_width = int((mask[short] == 0).sum())
    assert (first["input_ids"][short, :pad_width] == tok.pad_token_id).all() and mask[short, pad_width:].all()


def test_max_new_tokens_respected(tiny, spy):
    model, tok = tiny
    generate(model, tok, PROMPTS, Decoding(max_new_tokens=3), batch_size=5)
    assert spy[0]["out"].shape[1] - spy[0]["input_ids"].shape[1] <= 3


def test_stops_at_eos_and_strips_special_tokens(tiny):
    from tunelab.inference.generation import _decode_until_eos

    _, tok = tiny
    hello = tok("Hello there", add_special_tokens=False).input_ids
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    eos = {tok.eos_token_id}
    after = tok(" never", add_special_tokens=False).input_ids
    assert _decode_until_eos(tok, [im_start, *hello, tok.eos_token_id, *after], eos) == "Hello there"
    assert _decode_until_eos(tok, hello, eos) == "Hello there"


def test_str_prompt_is_one_user_message_rendered_like_training(tiny):
    _, tok = tiny
    as_messages = [{"role": "user", "content": "Hi"}]
    assert encode_prompt(tok, "Hi") == encode_prompt(tok, as_messages)
    text = render_prompt(tok, as_messages, system="Answer in French.")
    assert encode_prompt(tok, "Hi", system="Answer in French.") == tok(text, add_special_tokens=False).input_ids
    plain = encode_prompt(tok, "Hi", template="plain")
    assert tok.decode(plain).endswith("### Response:\n")


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(tiny):
    model, tok = tiny
    state = torch.get_rng_state()
    sample = Decoding(max_new_tokens=8, temperature=1.0, seed=7)
    first = generate(model, tok, PROMPTS[:3], sample, batch_size=2)
    assert generate(model, tok, PROMPTS[:3], sample, batch_size=2) == first
    assert torch.equal(torch.get_rng_state(), state)
    other = generate(model, tok, PROMPTS[:3], Decoding(max_new_tokens=8, temperature=1.0, seed=8), batch_size=2)
    assert other != first
    filtered = Decoding(max_new_tokens=8, temperature=0.7, top_k=5, top_p=0.9, seed=7)
    assert generate(model, tok, PROMPTS[:2], filtered) == generate(model, tok, PROMPTS[:2], filtered)


def test_training_mode_is_restored_and_progress_bar_runs(tiny):
    model, tok = tiny
    model.train()
    try:
        assert len(generate(model, tok, PROMPTS, Decoding(max_new_tokens=2), progress=True)) == len(PROMPTS)
        assert model.training
    finally:
        model.eval()


def test_stream_joins_to_generate(tiny):
    model, tok = tiny
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    decoding = Decoding(max_new_tokens=12)
    pieces = list(stream(model, tok, messages, decoding, system="Be brief."))
    assert len(pieces) > 1
    assert "".join(pieces) == generate(model, tok, [messages], decoding, system="Be brief.")[0]


def test_stream_closed_early_stops_generation(tiny, monkeypatch):
    model, tok = tiny
    real, produced = model.generate, []

    def without_eos(**kwargs):
        # EOS is kept out until max_new_tokens, so only the stop (not the model finishing) can end decoding early.
        out = real(**kwargs, min_new_tokens=kwargs["max_new_tokens"])
        produced.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(model, "generate", without_eos)
    pieces = stream(model, tok, [{"role": "user", "content": "Hi"}], Decoding(max_new_tokens=500))
    next(pieces)
    pieces.close()  # what a chat UI does when the user interrupts
    assert not [t for t in threading.enumerate() if t.name == "tunelab-stream"]
    # close() joins the thread whether or not it stopped; the token count shows decoding ended soon after.
    assert len(produced) == 1 and produced[0] < 50


def test_stream_reraises_generation_errors(tiny, monkeypatch):
    model, tok = tiny

    def broken(**kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        list(stream(model, tok, [{"role": "user", "content": "Hi"}]))


def test_bad_arguments():
    with pytest.raises(ValueError):
        Decoding(max_new_tokens=0)
    with pytest.raises(ValueError):
        Decoding(top_p=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        generate(None, None, [], batch_size=0)
