"""Evaluation generation speed: tunelab's batched generation against `model.generate` one prompt at a time.

    .venv/bin/python bench/generation_speed.py                 # 200 prompts, greedy, <= 32 new tokens (~5 min)
    .venv/bin/python bench/generation_speed.py --prompts 40

The prompts are the support-ticket prompts (the 120 test rows, then training rows up to --prompts), rendered
with the model's chat template. Both ways decode greedily on the built-in model in its compute dtype
(tunelab.models.pick_dtype), stop at EOS, and are timed after one warm-up prompt. Printed: seconds, new tokens
per second, the ratio, and whether every output is identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prompts(n: int) -> list[str]:
    rows = []
    for split in ("test", "train"):
        path = REPO / f"examples/support_tickets/{split}.jsonl"
        rows += [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return rows[:n]


def one_by_one(model, tokenizer, texts: list[str], decoding) -> tuple[list[str], int]:
    from tunelab.inference.generation import _decode_until_eos, encode_prompt, eos_ids, generation_kwargs

    outputs, new_tokens, eos = [], 0, set(eos_ids(model, tokenizer))
    for text in texts:
        ids = torch.tensor([encode_prompt(tokenizer, text)], device=model.device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, **generation_kwargs(model, tokenizer, decoding))
        new = out[0, ids.shape[1] :].tolist()
        outputs.append(_decode_until_eos(tokenizer, new, eos))
        new_tokens += count_until_eos(new, eos)
    return outputs, new_tokens


def count_until_eos(ids: list[int], eos: set[int]) -> int:
    return next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))


def main() -> None:
    from tunelab import models
    from tunelab.config.schema import ModelConfig
    from tunelab.inference.generation import Decoding, generate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()

    cfg = ModelConfig(name="smollm2-135m-instruct")
    device = models.pick_device("auto")
    dtype = models.pick_dtype("auto", device)
    tokenizer = models.load_tokenizer(cfg)
    model = models.load_model(cfg, dtype=dtype, device=device).eval()
    texts = prompts(args.prompts)
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    one_by_one(model, tokenizer, texts[:1], decoding)  # warm-up

    start = time.perf_counter()
    reference, new_tokens = one_by_one(model, tokenizer, texts, decoding)
    single = time.perf_counter() - start
    start = time.perf_counter()
    batched = generate(model, tokenizer, texts, decoding, batch_size=args.batch_size)
    ours = time.perf_counter() - start

    same = sum(a == b for a, b in zip(reference, batched, strict=True))
    dtype_name = str(dtype).removeprefix("torch.")
    print(f"{len(texts)} prompts, greedy, <= {args.max_new_tokens} new tokens, {dtype_name} on {device.type}")
    print("| way | seconds | new tokens/s | vs one by one |")
    print("|---|---:|---:|---:|")
    print(f"| model.generate, one prompt at a time | {single:.1f} | {new_tokens / single:.1f} | 1.00x |")
    print(
        f"| tunelab generate (batch {args.batch_size}) | {ours:.1f} | {new_tokens / ours:.1f} | {single / ours:.2f}x |"
    )
    print(f"identical outputs: {same}/{len(texts)}")
    for a, b in [(a, b) for a, b in zip(reference, batched, strict=True) if a != b][:3]:
        print(f"  differs: {a!r}\n      vs: {b!r}")


if __name__ == "__main__":
    main()
