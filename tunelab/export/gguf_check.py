"""Check a GGUF export against its source: same token ids, and how far apart the logits are.

    diff = check_gguf(Path("runs/demo/model"), Path("demo.gguf"))   # ~0 for f32, ~1e-2 for f16, more for q8_0

The export is read back with transformers' own GGUF loader (dequantized to float32), an implementation
independent of our writer: a wrong tensor name, permutation or hyperparameter shows up as a large difference.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError

DEFAULT_PROMPTS = (
    "The capital of France is Paris.",
    "Water boils at 100 degrees Celsius at sea level.",
    "She opened the window and the cold air rushed in.",
)


def check_gguf(model_dir: Path, gguf_file: Path, prompts: list[str] | None = None) -> float:
    """The max absolute logit difference between `model_dir` and its export `gguf_file` over `prompts`."""
    return compare_gguf(model_dir, gguf_file, prompts)[0]


def compare_gguf(model_dir: Path, gguf_file: Path, prompts: list[str] | None = None) -> tuple[float, float]:
    """(max |logit difference|, max |logit| of the source) between `model_dir` and its export over `prompts`.

    Raises TunelabError if the GGUF's tokenizer encodes any prompt to different ids than the source's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model_dir, gguf_file = Path(model_dir), Path(gguf_file)
    prompts = list(prompts or DEFAULT_PROMPTS)
    gguf_args = {"pretrained_model_name_or_path": gguf_file.parent, "gguf_file": gguf_file.name}
    # Each tokenizer loads once: transformers rebuilds a GGUF's tokenizer from its vocabulary and merges in Python
    # (seconds for a 49k vocabulary).
    source_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    exported_tokenizer = AutoTokenizer.from_pretrained(**gguf_args)
    ids = [_encode(source_tokenizer, p) for p in prompts]
    exported_ids = [_encode(exported_tokenizer, p) for p in prompts]
    mismatched = [p for p, a, b in zip(prompts, ids, exported_ids, strict=True) if not torch.equal(a, b)]
    if mismatched:
        raise TunelabError(f"{gguf_file}: its tokenizer encodes text differently from {model_dir}'s", mismatched)
    # One model in memory at a time: the source's logits first, then the export's.
    reference = _all_logits(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), ids)
    gc.collect()
    # dequantize=True: a dense float32 model even where transformers could keep q8_0 weights packed.
    exported = AutoModelForCausalLM.from_pretrained(
        **gguf_args, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    diff = max((a - b).abs().max().item() for a, b in zip(reference, _all_logits(exported, ids), strict=True))
    return diff, max(r.abs().max().item() for r in reference)


def _encode(tokenizer: Any, text: str) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt").input_ids


def _all_logits(model: Any, ids: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(input_ids=batch).logits.float() for batch in ids]
