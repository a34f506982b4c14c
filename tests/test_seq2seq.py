"""Sequence-to-sequence (T5-style): the data path (prompt to the encoder, answer as labels), training and
generation, on a tiny random T5 with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import memorizable_rows, run_cli, write_config, write_jsonl
from tunelab import config
from tunelab.data import build_for_task


@pytest.fixture(scope="session")
def tiny_t5_dir(smol_tokenizer_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_factor=1.0,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_t5")
    T5ForConditionalGeneration(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_seq2seq_rows_put_the_prompt_in_the_encoder_and_the_answer_in_the_labels(tmp_path, tiny_t5_dir):
    from transformers import AutoTokenizer

    cfg = config.load(write_config(tmp_path, tiny_t5_dir, method={"name": "full"}))
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    data = build_for_task(cfg, tokenizer, "seq2seq")
    first = data.train[0]
    answer = memorizable_rows()[0]["completion"]
    assert tokenizer.decode(first["labels"][:-1]) == answer and first["labels"][-1] == tokenizer.eos_token_id
    assert answer not in tokenizer.decode(first["input_ids"])  # the encoder never sees the answer
    assert memorizable_rows()[0]["prompt"] in tokenizer.decode(first["input_ids"])


def test_seq2seq_trains_and_generates_the_memorized_answers(tmp_path, tiny_t5_dir):
    """Three rows, three answers: all three right means the decoder reads the encoder (else at most 1 in 3)."""
    rows = memorizable_rows(3)
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "template": "plain"}
    train = {"max_steps": 40, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 20}
    cfg = write_config(tmp_path, tiny_t5_dir, method={"name": "full"}, train=train, data=data)
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "forgetting" not in metrics  # the retention probe scores causal LMs
    test = write_jsonl(tmp_path / "test.jsonl", rows)
    evaluated = run_cli(["eval", str(tmp_path / "run"), "--data", str(test), "--metrics", "exact_match"])
    assert evaluated.exit_code == 0, evaluated.output
    scored = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert scored["metrics"]["exact_match"] == 1.0


def test_seq2seq_with_lora(tmp_path, tiny_t5_dir):
    cfg = write_config(
        tmp_path, tiny_t5_dir, method={"name": "lora", "r": 4, "target_modules": ["q", "v"]}, train={"max_steps": 3}
    )
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    generated = run_cli(["generate", str(tmp_path / "run"), "The secret word for sky?", "--max-new-tokens", "4"])
    assert generated.exit_code == 0, generated.output
