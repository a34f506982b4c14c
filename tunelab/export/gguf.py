"""Export a Llama-family Hugging Face model directory to one GGUF file that llama.cpp and Ollama can run.

    from tunelab.export.gguf import export_gguf, check_gguf
    export_gguf(Path("runs/demo/model"), Path("demo.gguf"), dtype="q8_0")   # f32 | f16 | bf16 | q8_0
    check_gguf(Path("runs/demo/model"), Path("demo.gguf"))                  # max |logit difference|

Why our own writer: llama.cpp's convert_hf_to_gguf.py is a script in the llama.cpp repository, not a
pip-installable library, and it covers hundreds of architectures. This module is the small part of it that
Llama-architecture models need, on top of the `gguf` package (which is on PyPI): the same metadata keys,
tensor names, Q/K permutation, tensor types and tokenizer (gguf_tokenizer.py) as the converter writes.

Everything that can be refused (architecture, RoPE scaling, tokenizer, unknown tensors) is checked before
the output file is opened. Tensors are then streamed one at a time (memory stays at about one tensor) into
a temp file beside `out_file`, which is renamed into place only when complete: a crash never leaves a
truncated .gguf that looks whole, and an existing `out_file` is replaced only by a complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from tunelab.console import info
from tunelab.errors import TunelabError
from tunelab.export.gguf_check import check_gguf
from tunelab.export.gguf_tokenizer import add_tokenizer

__all__ = ["DTYPES", "SUPPORTED_MODEL_TYPES", "check_gguf", "export_gguf"]

# model_type values whose weights and forward pass are the llama.cpp "llama" architecture.
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
# dtype -> (the file type recorded in the header, the type of the 2-D weight matrices).
DTYPES = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
ROPE_TYPES = ("default", "linear", "llama3")
Q8_0_BLOCK = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output: its llama.cpp name, shape, storage type, and how to produce its values."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    load: Callable[[], np.ndarray]  # float32 values in the layout llama.cpp expects

    @property
    def nbytes(self) -> int:
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block_size * type_size


def export_gguf(model_dir: Path, out_file: Path, dtype: str = "f16") -> Path:
    """Write `model_dir` (config.json, *.safetensors, tokenizer files) to `out_file` as GGUF; return its path."""
    model_dir, out_file = Path(model_dir), Path(out_file)
    if dtype not in DTYPES:
        raise TunelabError(f"GGUF dtype {dtype!r} is not supported; choose one of: {', '.join(DTYPES)}")
    start = time.perf_counter()
    config = load_llama_config(model_dir)
    file_type, matrix_type = DTYPES[dtype]
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    add_metadata(writer, config, name=model_dir.resolve().name, file_type=file_type)
    add_tokenizer(writer, model_dir, vocab_size=config.vocab_size)
    with contextlib.ExitStack() as open_files:
        tensors = plan_tensors(model_dir, config, matrix_type, open_files)
        for tensor in tensors:
            writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, tensor.qtype)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(writer, tensors, out_file)
    size_mb = out_file.stat().st_size / 1e6
    info(f"Wrote {out_file} ({dtype}, {size_mb:.0f} MB) in {time.perf_counter() - start:.0f} s")
    return out_file


def load_llama_config(model_dir: Path) -> Any:
    """The model's transformers config, or a TunelabError if it is not a plain Llama-architecture model."""
    from transformers import AutoConfig

    path = model_dir / "config.json"
    if not path.is_file():
        raise TunelabError(
            f"{model_dir} is not a standalone model directory (no config.json); "
            "export a merged model, not an adapter, and save it with save_pretrained"
        )
    raw = json.loads(path.read_text(encoding="utf-8"))
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise TunelabError(
            f"cannot export model_type {model_type!r} to GGUF; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if raw.get("quantization_config"):
        raise TunelabError(f"{model_dir} holds quantized weights; export the unquantized (merged) model instead")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    rope_type = rope_parameters(config).get("rope_type", "default")
    if rope_type not in ROPE_TYPES:
        raise TunelabError(f"cannot export RoPE scaling {rope_type!r} to GGUF yet; supported: {', '.join(ROPE_TYPES)}")
    return config


def rope_parameters(config: Any) -> dict[str, Any]:
    # transformers 5 folds the older rope_theta / rope_scaling keys into one rope_parameters dict.
    return dict(getattr(config, "rope_parameters", None) or {})


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def add_metadata(writer: gguf.GGUFWriter, config: Any, name: str, file_type: gguf.LlamaFileType) -> None:
    """The llama.* hyperparameters llama.cpp reads to build the graph, as the converter's LlamaModel writes them."""
    rope = rope_parameters(config)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def plan_tensors(
    model_dir: Path, config: Any, matrix_type: gguf.GGMLQuantizationType, open_files: contextlib.ExitStack
) -> list[PlannedTensor]:
    """Every output tensor, from the safetensors headers only (no weights read yet); unknown names are errors."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        raise TunelabError(f"{model_dir} has no model*.safetensors weights; save the model with save_pretrained")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    planned, unknown = [], []
    for file in files:
        handle = open_files.enter_context(safe_open(file, framework="pt"))
        for hf_name in handle.keys():
            if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and config.tie_word_embeddings):
                continue  # recomputed by llama.cpp / the same tensor as token_embd
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                unknown.append(hf_name)
                continue
            shape = tuple(handle.get_slice(hf_name).get_shape())
            load = _loader(handle, hf_name, name, config)
            planned.append(PlannedTensor(name, shape, tensor_type(name, shape, matrix_type), load))
    if unknown:
        raise TunelabError(f"{model_dir} has tensors a llama GGUF has no place for", unknown[:10])
    return planned + rope_factor_tensors(config)


def tensor_type(
    name: str, shape: tuple[int, ...], matrix_type: gguf.GGMLQuantizationType
) -> gguf.GGMLQuantizationType:
    """Norms, biases and other 1-D tensors stay f32 (llama.cpp needs them so); q8_0 needs rows of whole blocks
    and falls back to f16 otherwise, like the converter."""
    if len(shape) < 2 or not name.endswith(".weight") or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    if matrix_type == gguf.GGMLQuantizationType.Q8_0 and shape[-1] % Q8_0_BLOCK != 0:
        return gguf.GGMLQuantizationType.F16
    return matrix_type


def _loader(handle: Any, hf_name: str, name: str, config: Any) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        values = handle.get_tensor(hf_name).to(torch.float32)
        if ".attn_q." in name:
            values = permute_rotary_halves(values, config.num_attention_heads)
        elif ".attn_k." in name:
            values = permute_rotary_halves(values, config.num_key_value_heads or config.num_attention_heads)
        return values.numpy()

    return load


def permute_rotary_halves(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's Q/K output rows from HF's layout to llama.cpp's.

    HF's rotary embedding rotates dimension i with i + head_dim/2 (`rotate_half`); llama.cpp's "normal" RoPE
    rotates adjacent pairs (2i, 2i+1), as Meta's original checkpoints did. The converter interleaves the two
    halves of every head (LlamaModel.permute), and transformers' GGUF loader undoes exactly that.
    """
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def rope_factor_tensors(config: Any) -> list[PlannedTensor]:
    """Llama 3.1+ scales RoPE frequencies per dimension; llama.cpp reads the divisors from `rope_freqs`."""
    if rope_parameters(config).get("rope_type") != "llama3":
        return []
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = rope_parameters(config)
    dim = head_dim(config)
    base = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, device=torch.device("cpu"))
    factors = (base / scaled).to(torch.float32).numpy()
    name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
    return [PlannedTensor(name, factors.shape, gguf.GGMLQuantizationType.F32, lambda: factors)]


def write_atomically(writer: gguf.GGUFWriter, tensors: list[PlannedTensor], out_file: Path) -> None:
    """Stream header, metadata and tensors into a temp file beside `out_file`, then rename it into place."""
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in tensors:
            writer.write_tensor_data(gguf.quants.quantize(tensor.load(), tensor.qtype))
        writer.close()
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, out_file)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)  # after a successful replace there is nothing left to remove
