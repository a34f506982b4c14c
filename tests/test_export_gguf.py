"""GGUF export of the tiny Llama (real SmolLM2 tokenizer), read back by transformers and by gguf.GGUFReader.

check_gguf costs ~17 s a call (transformers parses the 49k-token vocabulary from the GGUF three times), so
only f32 (exact) and q8_0 (lossy) go through it; every dtype is also compared tensor by tensor with the source.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tunelab.errors import TunelabError
from tunelab.export.gguf import check_gguf, export_gguf, permute_rotary_halves
from tunelab.export.gguf_check import DEFAULT_PROMPTS

HF_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
MATRIX_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}


@pytest.fixture(scope="module")
def exports(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    return {dtype: export_gguf(tiny_model_dir, out / f"tiny-{dtype}.gguf", dtype) for dtype in MATRIX_TYPES}


@pytest.fixture(scope="module")
def readers(exports) -> dict[str, gguf.GGUFReader]:
    """Each export parsed once (~2 s each: the 49k-token vocabulary is read field by field)."""
    return {dtype: gguf.GGUFReader(path) for dtype, path in exports.items()}


def save_tiny_variant(tokenizer_dir: Path, out: Path, **config_overrides) -> Path:
    """The tiny Llama with some config changed (untied embeddings, RoPE scaling), saved with the real tokenizer."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tests.conftest import tiny_llama_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = tiny_llama_config(vocab_size=len(tokenizer), initializer_range=0.1, **config_overrides)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def source_logit_scale(model_dir: Path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        return max(model(**tokenizer(p, return_tensors="pt")).logits.abs().max().item() for p in DEFAULT_PROMPTS)


def test_f32_export_gives_the_source_logits(tiny_model_dir, exports):
    assert check_gguf(tiny_model_dir, exports["f32"]) < 1e-4


def test_q8_0_export_loads_and_stays_close(tiny_model_dir, exports):
    diff = check_gguf(tiny_model_dir, exports["q8_0"])
    # Measured 0.051 against logits up to 2.9 (1.7%); 8-bit blocks cannot be exact, so 0 would mean no quantization.
    assert 0 < diff < 0.03 * source_logit_scale(tiny_model_dir)


@pytest.mark.parametrize("dtype", list(MATRIX_TYPES))
def test_every_tensor_is_the_source_tensor_in_its_type(tiny_model_dir, readers, dtype):
    source = load_file(tiny_model_dir / "model.safetensors")
    reader = readers[dtype]
    expected_names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight" for i in range(2) for part in HF_NAMES
    }
    assert {t.name for t in reader.tensors} == expected_names  # tied embeddings: no output.weight
    for tensor in reader.tensors:
        expected = hf_tensor(source, tensor.name)
        values = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
        if expected.dim() == 1:  # norms stay f32 in every dtype
            assert tensor.tensor_type.name == "F32"
            torch.testing.assert_close(values, expected, rtol=0, atol=0)
            continue
        assert tensor.tensor_type.name == MATRIX_TYPES[dtype], tensor.name
        if dtype == "q8_0":  # steps of (block absmax / 127); a wrong row order would miss by ~absmax
            # half a step (scale / 2) plus the f16 rounding of the scale itself
            assert (values - expected).abs().max() <= expected.abs().max() / 127 * 0.6, tensor.name
        else:
            rounded = expected.to({"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype])
            torch.testing.assert_close(values, rounded.float(), rtol=0, atol=0)


def hf_tensor(source: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The source tensor for a GGUF name, Q/K rows in llama.cpp's order (the f32 logits test checks that order)."""
    if name == "token_embd.weight":
        return source["model.embed_tokens.weight"]
    if name == "output_norm.weight":
        return source["model.norm.weight"]
    _, block, part, _ = name.split(".")
    weight = source[f"model.layers.{block}.{HF_NAMES[part]}.weight"]
    heads = {"attn_q": 4, "attn_k": 2}.get(part)
    return permute_rotary_halves(weight, heads) if heads else weight


def test_metadata_and_tokenizer_read_back(tiny_model_dir, readers, smol_tokenizer):
    reader = readers["f16"]
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    hyperparameters = {
        "block_count": 2,
        "context_length": 2048,
        "embedding_length": 32,
        "feed_forward_length": 64,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "rope.dimension_count": 8,
        "vocab_size": len(smol_tokenizer),
    }
    assert {key: field(reader, f"llama.{key}") for key in hyperparameters} == hyperparameters
    assert math.isclose(field(reader, "llama.rope.freq_base"), 10000.0)
    assert math.isclose(field(reader, "llama.attention.layer_norm_rms_epsilon"), 1e-6, rel_tol=1e-6)
    # The pre-tokenizer is identified by hashing the converter's probe text: this is the built-in model's own.
    assert (field(reader, "tokenizer.ggml.model"), field(reader, "tokenizer.ggml.pre")) == ("gpt2", "smollm")
    assert field(reader, "tokenizer.chat_template") == (tiny_model_dir / "chat_template.jinja").read_text()
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens[smol_tokenizer.convert_tokens_to_ids("Ġthe")] == "Ġthe"
    im_start = smol_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert field(reader, "tokenizer.ggml.token_type")[im_start] == gguf.TokenType.CONTROL
    assert field(reader, "tokenizer.ggml.bos_token_id") == smol_tokenizer.bos_token_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == smol_tokenizer.eos_token_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is False  # SmolLM2 encodes text without a BOS
    assert len(field(reader, "tokenizer.ggml.merges")) > 40_000


def test_untied_embeddings_write_the_output_matrix(smol_tokenizer_dir, tmp_path):
    model_dir = save_tiny_variant(smol_tokenizer_dir, tmp_path / "untied", tie_word_embeddings=False)
    reader = gguf.GGUFReader(export_gguf(model_dir, tmp_path / "untied.gguf", "f32"))
    output = next(t for t in reader.tensors if t.name == "output.weight")
    lm_head = load_file(model_dir / "model.safetensors")["lm_head.weight"]
    assert torch.equal(torch.from_numpy(np.array(output.data)), lm_head)


def test_llama3_rope_scaling_writes_the_frequency_factors(smol_tokenizer_dir, tmp_path):
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        # head_dim 8 has 4 frequencies; with 512 they fall in all three bands (kept, smoothed, divided)
        "original_max_position_embeddings": 512,
    }
    model_dir = save_tiny_variant(smol_tokenizer_dir, tmp_path / "llama3", rope_parameters=rope)
    reader = gguf.GGUFReader(export_gguf(model_dir, tmp_path / "llama3.gguf", "f16"))
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    assert factors.tensor_type.name == "F32"
    np.testing.assert_allclose(np.array(factors.data), converter_rope_factors(rope, head_dim=8), rtol=1e-5)
    assert math.isclose(field(reader, "llama.rope.freq_base"), 500000.0)


def converter_rope_factors(rope: dict, head_dim: int) -> list[float]:
    """The rope_freqs values as llama.cpp's converter computes them (LlamaModel.generate_extra_tensors)."""
    low_wavelen = rope["original_max_position_embeddings"] / rope["low_freq_factor"]
    high_wavelen = rope["original_max_position_embeddings"] / rope["high_freq_factor"]
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * rope["rope_theta"] ** (i / head_dim)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(rope["factor"])
        else:
            smooth = (rope["original_max_position_embeddings"] / wavelen - rope["low_freq_factor"]) / (
                rope["high_freq_factor"] - rope["low_freq_factor"]
            )
            factors.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    assert len(set(factors)) == 3, "the test shape should cover all three bands"
    return factors


@pytest.mark.parametrize("model_type", ["gpt2", "t5", "bert"])
def test_unsupported_architecture_is_refused_before_writing(tmp_path, model_type):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type).save_pretrained(tmp_path / "model")
    out_dir = tmp_path / "out"
    with pytest.raises(TunelabError, match=rf"model_type '{model_type}'.*supported: llama, mistral"):
        export_gguf(tmp_path / "model", out_dir / "model.gguf")
    assert not out_dir.exists()


def copy_model(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda spec: spec["model"].update(byte_fallback=True), "only byte-level BPE"),
        (lambda spec: spec.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer this exporter does not know"),
    ],
    ids=["sentencepiece-style", "unknown-pre-tokenizer"],
)
def test_unsupported_tokenizer_is_refused_before_writing(tiny_model_dir, tmp_path, change, message):
    model_dir = copy_model(tiny_model_dir, tmp_path / "model")
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    change(spec)
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TunelabError, match=message):
        export_gguf(model_dir, tmp_path / "out" / "model.gguf")
    assert not (tmp_path / "out").exists()


def test_unsupported_rope_scaling_and_dtype_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(TunelabError, match="choose one of: f32, f16, bf16, q8_0"):
        export_gguf(tiny_model_dir, tmp_path / "a.gguf", dtype="q4_k")
    model_dir = copy_model(tiny_model_dir, tmp_path / "yarn")
    config = json.loads((model_dir / "config.json").read_text())
    config["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 512,
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(TunelabError, match="RoPE scaling 'yarn'"):
        export_gguf(model_dir, tmp_path / "b.gguf")
    assert not list(tmp_path.glob("*.gguf"))


def test_a_tensor_llama_has_no_place_for_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    model_dir = copy_model(tiny_model_dir, tmp_path / "model")
    weights = load_file(model_dir / "model.safetensors")
    weights["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)  # a Qwen3-style extra: not llama
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TunelabError, match="no place for") as raised:
        export_gguf(model_dir, tmp_path / "out.gguf")
    assert raised.value.problems == ["model.layers.0.self_attn.q_norm.weight"]
    assert not (tmp_path / "out.gguf").exists()


def test_an_adapter_directory_is_refused(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(TunelabError, match="not a standalone model directory"):
        export_gguf(tmp_path / "adapter", tmp_path / "a.gguf")


def test_a_crash_mid_write_leaves_the_old_file_and_no_temp_file(tiny_model_dir, tmp_path, monkeypatch):
    out_file = tmp_path / "model.gguf"
    out_file.write_bytes(b"the previous export")
    real_quantize, calls = gguf.quants.quantize, []

    def quantize_then_crash(data, qtype):
        calls.append(qtype)
        if len(calls) == 5:
            raise KeyboardInterrupt  # BaseException, like a Ctrl-C or a kill while writing
        return real_quantize(data, qtype)

    monkeypatch.setattr(gguf.quants, "quantize", quantize_then_crash)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(tiny_model_dir, out_file, "f16")
    assert out_file.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_a_successful_export_leaves_only_the_gguf(exports):
    assert sorted(p.name for p in exports["f32"].parent.iterdir()) == sorted(p.name for p in exports.values())
