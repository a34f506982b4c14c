"""`make demo` / `tunelab demo`: the main job, end to end on the built-in model.

    tunelab demo --output-dir runs/demo

Support tickets → JSON {category, priority, product}: fine-tune the built-in model with LoRA
(configs/demo.yaml), then `compare` on the held-out test set: the base model zero-shot, the base model
few-shot, the fine-tuned model; same prompts, same greedy decoding. Shows the table with 95% intervals,
the verdict, three examples and the forgetting line. Everything lands in the run directory
(demo_report.md / .json, compare/compare.md / .json / .png).
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelab import artifacts, config, train
from tunelab.console import console, info
from tunelab.errors import ConfigError
from tunelab.evaluation import compare, forgetting

DEMO_CONFIG = Path("configs/demo.yaml")
TEST_FILE = Path("examples/support_tickets/test.jsonl")
METRICS = ["json_fields", "exact_match"]


def run(output_dir: Path, config_path: Path = DEMO_CONFIG, test_file: Path = TEST_FILE) -> dict:
    started = time.perf_counter()
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path} not found", [f"run the demo from the repository root (where {config_path} is)"]
        )
    cfg = config.load(config_path, [f"train.output_dir={output_dir}", "train.overwrite_output_dir=true"])

    step(1, f"fine-tune {cfg.model.name} with {cfg.method.name} ({config_path})")
    result = train.run(cfg)

    step(2, f"compare on {test_file}: zero-shot, {cfg.eval.few_shot_k}-shot and fine-tuned, same prompts")
    arms = compare.compare(cfg, test_file, [str(result.run_dir)], METRICS)
    compare.write(arms, result.run_dir / "compare")

    report = {
        "arms": {arm.name: arm.result.to_dict() for arm in arms},
        "verdict": compare.verdict(arms),
        "examples": examples(arms[0], arms[-1]),
        "forgetting": result.metrics.get("forgetting"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    show(arms, report)
    artifacts.write_json(result.run_dir / "demo_report.json", report)
    artifacts.write_text(result.run_dir / "demo_report.md", markdown(arms, report))
    info(f"report: {result.run_dir / 'demo_report.md'}; plot: {result.run_dir / 'compare' / 'compare.png'}")
    return report


def step(n: int, title: str) -> None:
    console.rule(f"[bold]step {n}/2[/]: {title}")
    info(f"({time.strftime('%H:%M:%S')})")


def examples(zero_shot: compare.Arm, tuned: compare.Arm) -> list[dict]:
    return [
        {
            "prompt": before["input"],
            "reference": before["reference"],
            "before": before["output"],
            "after": after["output"],
        }
        for before, after in zip(zero_shot.result.rows, tuned.result.rows, strict=True)
    ]


def closing_lines(report: dict) -> list[str]:
    lines = [report["verdict"]]
    if report.get("forgetting"):
        lines.append(forgetting.summary(report["forgetting"]))
    lines.append(f"{len(report['examples'])} test tickets; demo took {report['seconds'] / 60:.1f} min.")
    return lines


def markdown(arms: list[compare.Arm], report: dict) -> str:
    return compare.markdown(arms) + "\n" + "\n\n".join(closing_lines(report)[1:]) + "\n"


def show(arms: list[compare.Arm], report: dict) -> None:
    console.print(compare.table(arms, heading="Support tickets → JSON on the test set (95% CI)"))
    for ex in report["examples"][:3]:
        console.print(f"\nticket:     {ex['prompt']}", markup=False)
        console.print(f"  expected:   {ex['reference']}", markup=False)
        console.print(f"  zero-shot:  {ex['before'].strip()[:200]!r}", markup=False)
        console.print(f"  fine-tuned: {ex['after'].strip()[:200]!r}", markup=False)
    console.print()
    for line in closing_lines(report):
        console.print(line, markup=False, soft_wrap=True)
