"""`make demo` / `tunelab demo`: the main job, end to end on the built-in model.

    tunelab demo --output-dir runs/demo

Support tickets → JSON {category, priority, product}: score the base model zero-shot on the test
set, fine-tune it with LoRA (configs/demo.yaml), score the result, and show the before/after table
and three examples. Everything it writes lands in the run directory (demo_report.md / .json).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from tunelab import artifacts, config, data, train
from tunelab.console import console, info
from tunelab.errors import ConfigError
from tunelab.evaluation import forgetting
from tunelab.evaluation.predict import predict, score
from tunelab.inference import Loaded, load_for_inference

DEMO_CONFIG = Path("configs/demo.yaml")
TEST_FILE = Path("examples/support_tickets/test.jsonl")
METRICS = ["exact_match", "json_fields"]


def run(output_dir: Path, config_path: Path = DEMO_CONFIG, test_file: Path = TEST_FILE) -> dict:
    started = time.perf_counter()
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path} not found", [f"run the demo from the repository root (where {config_path} is)"]
        )
    cfg = config.load(config_path, [f"train.output_dir={output_dir}", "train.overwrite_output_dir=true"])
    examples = data.read_eval_examples(test_file, cfg)
    references = [e.reference for e in examples]

    step(1, f"zero-shot: the base model {cfg.model.name} on {len(examples)} test tickets")
    base = load_for_inference(cfg.model.name, cfg.model.device, cfg.model.dtype)
    base = Loaded(base.model, base.tokenizer, cfg.data.template, cfg.data.system, base.source)
    before = predict(base, examples)
    del base

    step(2, f"fine-tune with {cfg.method.name} ({config_path})")
    result = train.run(cfg)

    step(3, "the fine-tuned model on the same test tickets")
    after = predict(load_for_inference(str(result.run_dir)), examples)

    report = {
        "before": score(before, references, METRICS),
        "after": score(after, references, METRICS),
        "examples": [
            {"prompt": e.messages[-1]["content"], "reference": e.reference, "before": b, "after": a}
            for e, b, a in zip(examples, before, after, strict=True)
        ],
        "forgetting": result.metrics.get("forgetting"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    show(report)
    artifacts.write_json(result.run_dir / "demo_report.json", report)
    artifacts.write_text(result.run_dir / "demo_report.md", markdown(report))
    info(f"report: {result.run_dir / 'demo_report.md'}")
    return report


def step(n: int, title: str) -> None:
    console.rule(f"[bold]step {n}/3[/]: {title}")
    info(f"({time.strftime('%H:%M:%S')})")


def percent_or_count(key: str, value: float) -> str:
    return f"{value:.0f}" if key.endswith("_count") else f"{100 * value:.1f}%"


def markdown(report: dict) -> str:
    lines = ["| metric | zero-shot base | fine-tuned |", "|---|---:|---:|"]
    for key, before in report["before"].items():
        lines.append(f"| {key} | {percent_or_count(key, before)} | {percent_or_count(key, report['after'][key])} |")
    lines.append(f"\n{len(report['examples'])} test tickets; demo took {report['seconds'] / 60:.1f} min.")
    if report.get("forgetting"):
        lines.append(f"\n{forgetting.summary(report['forgetting'])}")
    return "\n".join(lines) + "\n"


def show(report: dict) -> None:
    table = Table(title="Support tickets → JSON: base model vs fine-tuned (test set)")
    table.add_column("metric")
    table.add_column("zero-shot base", justify="right")
    table.add_column("fine-tuned", justify="right")
    for key, before in report["before"].items():
        table.add_row(key, percent_or_count(key, before), percent_or_count(key, report["after"][key]))
    console.print(table)
    for ex in report["examples"][:3]:
        console.print(f"\n[bold]ticket:[/] {ex['prompt']}")
        console.print(f"  expected:   {ex['reference']}")
        console.print(f"  before:     {ex['before'].strip()[:200]!r}")
        console.print(f"  after:      {ex['after'].strip()[:200]!r}")
    if report.get("forgetting"):
        console.print(f"\n{forgetting.summary(report['forgetting'])}", markup=False)
    info(f"\ndemo finished in {report['seconds'] / 60:.1f} min")
