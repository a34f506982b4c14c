"""Measure what each forgetting mitigation costs and saves on the demo: the numbers of the README's table.

    .venv/bin/python examples/forgetting/measure.py                  # every variant; ~10 min each on 2 cores
    .venv/bin/python examples/forgetting/measure.py --only baseline replay-0.2 --shares 0.2 0.3 0.5

Each variant is `configs/demo.yaml` without its mitigation (UNMITIGATED) and with a few settings changed, trained
into `runs/forgetting/<variant>` (a finished one is read back, so the script resumes where it stopped). Each is then
scored on the demo's test set (field accuracy, exact match) and on the retention probe (accuracy, perplexity; the drop
with a paired 95% interval over the questions, against the base scored in the same process). `--shares` also scores
each LoRA variant merged that share of the way back to the base (forgetting.merge_back) without retraining: the same
adapter with B scaled, probe and test set scored again. Results: `runs/forgetting/results.json` (every variant and
share measured so far) and `results.md`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tunelab import config
from tunelab.evaluation import forgetting
from tunelab.evaluation.evaluate import evaluate_loaded
from tunelab.inference.loading import load_run
from tunelab.sweeps.runs import run_or_resume, with_settings
from tunelab.training.anchor import lora_pairs

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "runs/forgetting"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# The demo as it was before its default mitigation (data.replay_fraction: 0.2, chosen from these measurements).
UNMITIGATED = {"data.replay_fraction": 0.0, "forgetting.l2_to_base": 0.0, "forgetting.merge_back": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "replay-0.2": {"data.replay_fraction": 0.2},
    "replay-0.4": {"data.replay_fraction": 0.4},
    "rank-4": {"method.r": 4, "method.alpha": 8},
    "attention-only": {"method.target_modules": ATTENTION},
    "lr-5e-4": {"train.learning_rate": 5e-4},
    "l2sp-1e-3": {"forgetting.l2_to_base": 1e-3},
    "l2sp-1e-2": {"forgetting.l2_to_base": 1e-2},
}


def measure(name: str, shares: list[float]) -> list[dict[str, Any]]:
    """Train (or read back) one variant, then score it as trained and merged back by each share."""
    cfg = with_settings(config.load(ROOT / "configs/demo.yaml"), UNMITIGATED | VARIANTS[name])
    cfg = with_settings(cfg, {"train.output_dir": str(OUT / name)})
    started = time.perf_counter()
    run_or_resume(cfg)
    metrics = json.loads((OUT / name / "metrics.json").read_text())
    loaded = load_run(str(OUT / name), None, None, merge=False)
    starts = [pair.b.detach().clone() for pair in lora_pairs(loaded.model)]
    probe = forgetting.load_probe(cfg.forgetting)
    scale_lora(loaded.model, starts, 0.0)  # B = 0: the base itself, scored here for each question's answer
    base = forgetting.score(loaded.model, loaded.tokenizer, probe)
    rows = []
    for share in [0.0, *shares]:
        scale_lora(loaded.model, starts, 1.0 - share)
        after = forgetting.score(loaded.model, loaded.tokenizer, probe)
        report = forgetting.compare(base, after, cfg.forgetting)
        result = evaluate_loaded(loaded, cfg, cfg.eval.test, cfg.eval.metrics, resamples=0)
        merged = 1 - (1 - cfg.forgetting.merge_back) * (1 - share)  # a run trained with merge_back was merged once
        rows.append(row(name, merged, result.metrics, report, metrics, time.perf_counter() - started))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def scale_lora(model, starts: list, keep: float) -> None:
    """The trained adapter with B scaled by `keep`: its change to the base scaled the same (merge_back = 1 - keep)."""
    for pair, b in zip(lora_pairs(model), starts, strict=True):
        pair.b.data.copy_(b * keep)


def row(name: str, share: float, scores: dict, report: dict, metrics: dict, seconds: float) -> dict[str, Any]:
    return {
        "variant": name,
        "merge_back": round(share, 3),
        "field_accuracy": 100 * scores["field_accuracy"],
        "exact_match": 100 * scores["exact_match"],
        "probe_accuracy": 100 * report["after"]["accuracy"],
        "probe_drop_points": -report["delta"]["accuracy_points"],
        "probe_drop_ci95": [-x for x in reversed(report["delta"]["accuracy_points_ci95"])],
        "perplexity_ratio": report["after"]["perplexity"] / report["base"]["perplexity"],
        "train_minutes": metrics["train"]["train_runtime"] / 60,
        "steps": metrics["eval"]["step"],
        "seconds": round(seconds),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant (the demo without replay, plus) | merge back | field accuracy | exact match | probe accuracy "
        "| probe drop, points (95% CI) | perplexity | steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        low, high = r.get("probe_drop_ci95", [float("nan")] * 2)
        settings = ", ".join(f"`{k}: {shown(v)}`" for k, v in VARIANTS[r["variant"]].items()) or "nothing"
        lines.append(
            f"| {settings} | {r['merge_back']:g} | {r['field_accuracy']:.1f}% | {r['exact_match']:.1f}% | "
            f"{r['probe_accuracy']:.1f}% | {r['probe_drop_points']:.1f} ({low + 0:.1f} to {high + 0:.1f}) | "
            f"{r['perplexity_ratio']:.2f}x | {r.get('steps', '')} |"
        )
    return "\n".join(lines) + "\n"


def shown(value: Any) -> str:
    return f"[{', '.join(map(str, value))}]" if isinstance(value, list) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--shares", nargs="*", type=float, default=[], help="merge-back shares to score, e.g. 0.3")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else []
    for name in args.only:
        fresh = measure(name, args.shares)
        done = {(r["variant"], r["merge_back"]) for r in fresh}
        results = [r for r in results if (r["variant"], r["merge_back"]) not in done] + fresh
        results.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["merge_back"]))
        path.write_text(json.dumps(results, indent=1))
        (OUT / "results.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
