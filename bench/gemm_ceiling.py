"""The ceiling the matmuls alone put on a LoRA step's tokens/s, measured on this machine.

    .venv/bin/python bench/gemm_ceiling.py                        # a demo batch: 727 tokens, 177 of them trained
    .venv/bin/python bench/gemm_ceiling.py --tokens 2335 --trained 215    # a wide batch

Times only the matrix multiplies one LoRA step of the built-in model must do, at their real shapes, with nothing
else in the step: for each layer's seven frozen projections the forward product and the input gradient, and the
LM head on the trained tokens only (as tunelab computes it). LoRA's rank-16 products are left out (~1% of the
FLOPs). Printed next to it: the fp32 matmul rate of the same moment, measured as bench/speed.py measures the
rate its MFU divides by (tunelab.planning.machine.measure_matmul_rate). A step that also runs attention, norms,
activations, the optimizer and autograd cannot pass the tokens/s printed here; this is what "the targets of
issue 5 need more than this CPU's fp32 matmuls" means in numbers. The token counts default to the demo batch
profiled in docs/speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median_seconds(work, repeats: int) -> float:
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_matmuls(config, tokens: int, trained: int):
    """(a function doing one step's matmuls, their FLOPs)."""
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    shapes = [(h, config.num_attention_heads * config.head_dim), (h, kv), (h, kv), (h, h)]
    shapes += [(h, config.intermediate_size)] * 2 + [(config.intermediate_size, h)]
    weights = [torch.randn(out, inp) * 0.02 for inp, out in shapes]
    inputs = {n: torch.randn(tokens, n) for n in {s for pair in shapes for s in pair}}
    head = torch.randn(config.vocab_size, h) * 0.02
    head_in, head_grad = torch.randn(trained, h), torch.randn(trained, config.vocab_size)

    def work() -> None:
        for _ in range(config.num_hidden_layers):
            for (inp, out), weight in zip(shapes, weights, strict=True):
                F.linear(inputs[inp], weight)  # forward
                inputs[out] @ weight  # the input's gradient through the frozen weight
        F.linear(head_in, head)
        head_grad @ head

    per_layer = sum(4 * tokens * inp * out for inp, out in shapes)
    return work, config.num_hidden_layers * per_layer + 4 * trained * h * config.vocab_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=727, help="real tokens in the batch")
    p.add_argument("--trained", type=int, default=177, help="of them, the trained (answer) tokens")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from transformers import AutoConfig

    from tunelab.config.schema import ModelConfig
    from tunelab.models import model_dir
    from tunelab.planning.machine import measure_matmul_rate

    config = AutoConfig.from_pretrained(model_dir(ModelConfig()))
    work, flops = step_matmuls(config, args.tokens, args.trained)
    print(f"built-in model, {args.tokens} tokens a step ({args.trained} trained), {flops / 1e9:.0f} GFLOP of matmuls")
    for _ in range(args.rounds):
        rate = measure_matmul_rate(torch.device("cpu"), torch.float32, seconds=2.0) / 1e9
        seconds = median_seconds(work, 5)
        print(
            f"fp32 matmul {rate:6.1f} GFLOP/s | the step's matmuls alone {seconds:.2f} s, {flops / seconds / 1e9:6.1f}"
            f" GFLOP/s ({flops / seconds / 1e9 / rate:.0%}) | ceiling {args.tokens / seconds:.0f} tokens/s"
        )


if __name__ == "__main__":
    main()
