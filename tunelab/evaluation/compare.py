"""`tunelab compare`: was fine-tuning worth it over prompting or retrieval? One test set, same decoding:

    arms: the base model zero-shot, the base model few-shot (k training examples before each prompt,
    as many as fit the context window), with --index the base model with retrieved passages (rag), and
    one or more fine-tuned runs, each also with the passages (fine-tuned+rag) when there is an index.

Writes compare.md, compare.json and compare.png (main metric per arm with 95% error bars) and
states the winner and the margin in one sentence. Each fine-tuned arm also shows what its training cost (device-hours,
energy, CO2: the run's metrics.json "compute"; "not recorded" for runs from before it was measured).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab import artifacts, data, energy
from tunelab.config import RunConfig, load
from tunelab.errors import ConfigError
from tunelab.evaluation.arms import Retrieval, arm_name, few_shot_examples, rag_examples, retrieve
from tunelab.evaluation.evaluate import EvalResult, add_rules, evaluate_loaded, judge_rows
from tunelab.evaluation.judge import RulesCheck
from tunelab.evaluation.metrics import unknown_metrics
from tunelab.evaluation.rules import paired_change
from tunelab.evaluation.scoring import format_value
from tunelab.inference.loading import Loaded, load_for_inference
from tunelab.rag import Passage


@dataclass
class Arm:
    name: str
    result: EvalResult
    run: str | None = None  # a fine-tuned arm's run directory
    compute: dict[str, Any] | None = None  # what training it cost: metrics.json "compute" (energy.combine)


def tuned_arm(name: str, result: EvalResult, run: str) -> Arm:
    """An arm of a fine-tuned run, with its training's cost when the run recorded one (older runs did not)."""
    metrics = Path(run) / "metrics.json"
    recorded = json.loads(metrics.read_text()) if metrics.is_file() else {}
    return Arm(name, result, run, recorded.get("compute"))


def training_cost(arm: Arm) -> str:
    """One line for a fine-tuned arm (energy.describe); "" for the base model's arms, which trained nothing."""
    if arm.run is None:
        return ""
    return energy.describe(arm.compute) if arm.compute else "not recorded"


def cost_fields(arm: Arm) -> dict[str, Any]:
    """compare.json's cost of a fine-tuned arm: the line and the run's whole `compute` (null when not recorded)."""
    return {} if arm.run is None else {"training_cost": training_cost(arm), "compute": arm.compute}


OUTPUT_FILES = ("compare.json", "compare.md", "compare.png")


@dataclass(frozen=True)
class CompareJob:
    """A comparison with every check that needs no weights done."""

    cfg: RunConfig
    test_file: Path
    runs: list[str]
    metrics: list[str]
    examples: list[Any]
    output_dir: Path
    trust_remote_code: bool = False
    check: RulesCheck | None = None
    retrieval: Retrieval | None = None


def prepare(
    config_path: Path,
    data_file: Path | None,
    runs: list[str],
    metrics: list[str] | None,
    output_dir: Path,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    check: RulesCheck | None = None,
    retrieval: Retrieval | None = None,
) -> CompareJob:
    """The preflight of `tunelab compare` (run(prepare(...))): the config, metric names, test rows, runs and the
    output, before any model loads."""
    from tunelab.evaluation.evaluate import test_file_for

    cfg = load(config_path)
    test_file = test_file_for(str(config_path), config_path, data_file)
    metrics = metrics or cfg.eval.metrics
    problems = unknown_metrics(metrics)
    problems += [f"--run {run}: no such run directory" for run in runs if not Path(run).is_dir()]
    problems += artifacts.output_problems([output_dir / name for name in OUTPUT_FILES], overwrite, "--output-dir")
    if problems:
        raise ConfigError(problems[0], problems[1:])
    if retrieval is not None:
        retrieval.check()
    for run in runs:
        artifacts.open_run(run)  # an unfinished run says so now, not after the base model's arms
    examples = data.read_eval_examples(test_file, cfg)
    return CompareJob(cfg, test_file, runs, metrics, examples, output_dir, trust_remote_code, check, retrieval)


def run(job: CompareJob) -> list[Arm]:
    """Every arm, then compare.md/.json/.png (and each arm's predictions) in the job's output_dir."""
    arms = compare(job.cfg, job.test_file, job.runs, job.metrics, job.examples, job.trust_remote_code, job.retrieval)
    if job.check is not None:
        judge_arms(arms, job.check)
    write(arms, job.output_dir)
    return arms


def compare(
    cfg: RunConfig,
    test_file: Path,
    runs: list[str],
    metrics: list[str],
    examples: list[Any] | None = None,
    trust_remote_code: bool = False,
    retrieval: Retrieval | None = None,
) -> list[Arm]:
    """Every arm on the test rows; the base model as `cfg` loads it, each run only with `trust_remote_code`."""
    examples = examples if examples is not None else data.read_eval_examples(test_file, cfg)
    retrieved = retrieve(retrieval, examples, trust_remote_code) if retrieval is not None else None
    base = load_for_inference(
        cfg.model.name, cfg.model.device, cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code
    )
    base = Loaded(base.model, base.tokenizer, cfg.data.template, cfg.data.system, cfg.model.name)
    arms = [Arm("zero-shot", evaluate_loaded(base, cfg, test_file, metrics, examples))]
    if cfg.eval.few_shot_k:
        k = cfg.eval.few_shot_k
        shots, mean_used = few_shot_examples(cfg, base, examples, k)
        name = arm_name("few-shot", k, mean_used, f"{k}-shot")
        arms.append(Arm(name, evaluate_loaded(base, cfg, test_file, metrics, shots)))
    if retrieved is not None:
        arms.append(rag_arm("rag", None, base, cfg, test_file, metrics, examples, retrieved))
    del base
    for run in runs:
        tuned = load_for_inference(run, trust_remote_code=trust_remote_code)
        arms.append(tuned_arm(f"fine-tuned ({run})", evaluate_loaded(tuned, cfg, test_file, metrics, examples), run))
        if retrieved is not None:
            arms.append(rag_arm("fine-tuned+rag", run, tuned, cfg, test_file, metrics, examples, retrieved))
    return arms


def rag_arm(
    kind: str,
    run: str | None,
    loaded: Loaded,
    cfg: RunConfig,
    test_file: Path,
    metrics: list[str],
    examples: list[Any],
    retrieved: list[list[Passage]],
) -> Arm:
    """`loaded` answering with the retrieved passages that fit its window, named by what it got ("rag (top 4)",
    "fine-tuned+rag (runs/x, up to 4, 2.5 fit on average)"); each row records the passages it was given."""
    with_context, used, mean_used = rag_examples(cfg, loaded, examples, retrieved)
    k = max(map(len, retrieved))
    result = evaluate_loaded(loaded, cfg, test_file, metrics, with_context)
    for row, passages in zip(result.rows, used, strict=True):
        row["passages"] = [{"source": p.source, "chunk": p.chunk} for p in passages]
    name = f"{kind} ({run + ', ' if run else ''}{passages_got(k, retrieved, used, mean_used)})"
    return tuned_arm(name, result, run) if run else Arm(name, result)


def passages_got(k: int, retrieved: list[list[Passage]], used: list[list[Passage]], mean_used: float) -> str:
    """ "top k" when every question got k; else whether the window or the retriever (lexical search finds nothing
    for a question sharing no word with the documents) gave fewer."""
    if mean_used == k:
        return f"top {k}"
    if all(len(u) == len(r) for u, r in zip(used, retrieved, strict=True)):
        return f"up to {k}, {mean_used:.1f} retrieved on average"
    return f"up to {k}, {mean_used:.1f} fit on average"


def judge_arms(arms: list[Arm], check: RulesCheck) -> None:
    """Every arm's answers judged against the rules (one judge, loaded once, all arms in one call); each arm after
    the first gets its change in the share breaking a rule against the first (zero-shot: before), with a paired
    bootstrap interval over the test rows."""
    rows = [row for arm in arms for row in arm.result.rows]
    verdicts = judge_rows(check, rows)
    per_arm = [verdicts[i * len(arms[0].result.rows) : (i + 1) * len(arms[0].result.rows)] for i in range(len(arms))]
    for arm, arm_verdicts in zip(arms, per_arm, strict=True):
        add_rules(arm.result, check, arm_verdicts)
    for arm, arm_verdicts in zip(arms[1:], per_arm[1:], strict=True):
        change, interval = paired_change(per_arm[0], arm_verdicts)
        arm.result.rules |= {"change_vs": arms[0].name, "change": change, "change_ci95": interval}


def rules_sentences(arms: list[Arm]) -> list[str]:
    """One line per arm judged against a first: the change in the share of answers breaking a rule."""
    lines = []
    for arm in arms[1:]:
        rules = arm.result.rules or {}
        if "change" in rules:
            low, high = rules["change_ci95"]
            lines.append(
                f"rules broken, {arm.name} vs {rules['change_vs']}: {100 * rules['change']:+.1f} points "
                f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}, paired over the same test rows)."
            )
    return lines


def verdict(arms: list[Arm]) -> str:
    """One sentence: which arm wins on the main metric, by how much, and at what prompt cost."""
    key = arms[0].result.main
    ranked = sorted(arms, key=lambda a: -a.result.metrics.get(key, 0.0))
    best, runner_up = ranked[0], ranked[1] if len(ranked) > 1 else None
    if runner_up is None:
        return f"{best.name}: {key} {format_value(key, best.result.metrics[key])}."
    margin = best.result.metrics[key] - runner_up.result.metrics[key]
    lo, hi = best.result.intervals.get(key, (None, None))
    r_lo, r_hi = runner_up.result.intervals.get(key, (None, None))
    overlap = lo is not None and r_hi is not None and lo <= r_hi
    cost = best.result.prompt_tokens_per_example / max(runner_up.result.prompt_tokens_per_example, 1)
    return (
        f"{best.name} wins on {key}: {format_value(key, best.result.metrics[key])} vs "
        f"{format_value(key, runner_up.result.metrics[key])} for {runner_up.name} "
        f"(margin {format_value(key, margin).replace('%', ' points')}"
        f"{', within the confidence intervals' if overlap else ''}), "
        f"with {cost:.2f}x its prompt tokens per example."
    )


def markdown(arms: list[Arm]) -> str:
    keys = list(arms[0].result.metrics)
    costs = any(arm.run for arm in arms)  # a column only when some arm was fine-tuned
    header = ["arm", *keys, "latency/example", "prompt tokens/example", *(["training cost"] if costs else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        r = arm.result
        cells = [format_value(k, r.metrics[k], r.intervals.get(k)) for k in keys]
        cells += [f"{r.seconds_per_example:.2f} s", f"{r.prompt_tokens_per_example:.0f}"]
        lines.append(f"| {arm.name} | " + " | ".join(cells + ([training_cost(arm)] if costs else [])) + " |")
    return "\n".join([*lines, *task_rows(arms), "", verdict(arms), *rules_sentences(arms)]) + "\n"


def task_rows(arms: list[Arm]) -> list[str]:
    """Several tasks: each arm on each task (the task column), the metrics scored on that task's rows alone."""
    if not arms[0].result.by_task:
        return []
    keys = list(arms[0].result.metrics)
    lines = ["", "| task | arm | rows | " + " | ".join(keys) + " |", "|---|---|---:|" + "---:|" * len(keys)]
    for task in arms[0].result.by_task:
        for arm in arms:
            part = arm.result.by_task[task]
            cells = [
                format_value(k, part["metrics"][k], part["intervals"].get(k)) if k in part["metrics"] else ""
                for k in keys
            ]
            lines.append(f"| {task} | {arm.name} | {part['rows']} | " + " | ".join(cells) + " |")
    return lines


def title(arms: list[Arm]) -> str:
    """The kinds of arm compared, e.g. "zero-shot vs 3-shot vs rag vs fine-tuned vs fine-tuned+rag"."""
    kinds = dict.fromkeys(arm.name.split(" (")[0] for arm in arms)
    return " vs ".join(kinds)


def table(arms: list[Arm], heading: str | None = None) -> Any:
    """The comparison for a terminal: one column per arm, one row per metric, then the costs."""
    from rich.table import Table

    grid = Table(title=heading or f"{title(arms)} (95% CI)")
    grid.add_column("metric")
    for arm in arms:
        grid.add_column(arm.name, justify="right")
    for key in arms[0].result.metrics:
        grid.add_row(key, *(format_value(key, a.result.metrics[key], a.result.intervals.get(key)) for a in arms))
    main = arms[0].result.main
    for task in arms[0].result.by_task:  # several tasks: the headline metric on each task's rows
        grid.add_row(f"{main} ({task})", *(task_cell(a, task, main) for a in arms))
    grid.add_row("latency / example", *(f"{a.result.seconds_per_example:.2f} s" for a in arms))
    grid.add_row("prompt tokens / example", *(f"{a.result.prompt_tokens_per_example:.0f}" for a in arms))
    if any(a.run for a in arms):
        grid.add_row("training cost", *(training_cost(a) for a in arms))
    return grid


def task_cell(arm: Arm, task: str, key: str) -> str:
    part = arm.result.by_task[task]
    return format_value(key, part["metrics"][key], part["intervals"].get(key)) if key in part["metrics"] else ""


def slug(name: str) -> str:
    """An arm's name as a file name part: "fine-tuned (runs/demo)" -> "fine-tuned-runs-demo"."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()


def plot(arms: list[Arm], path: Path) -> None:
    plt = artifacts.pyplot()
    key = arms[0].result.main
    values = [a.result.metrics[key] for a in arms]
    errors = [
        [v - a.result.intervals.get(key, (v, v))[0] for v, a in zip(values, arms, strict=True)],
        [a.result.intervals.get(key, (v, v))[1] - v for v, a in zip(values, arms, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(arms), 3.6))
    ax.bar([a.name for a in arms], values, yerr=errors, capsize=6, color="#4c72b0")
    ax.set_ylabel(f"{key} (95% CI)")
    ax.set_title(title(arms))
    fig.tight_layout()
    artifacts.write_figure(fig, path, dpi=120)


def write(arms: list[Arm], out_dir: Path) -> None:
    """compare.json / .md / .png, and each arm's predictions (input, reference, output, per-row scores)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        rows = "".join(json.dumps(r) + "\n" for r in arm.result.rows)
        artifacts.write_text(out_dir / f"predictions-{slug(arm.name)}.jsonl", rows)
    artifacts.write_json(
        out_dir / "compare.json",
        {a.name: a.result.to_dict() | cost_fields(a) for a in arms} | {"verdict": verdict(arms)},
    )
    artifacts.write_text(out_dir / "compare.md", markdown(arms))
    plot(arms, out_dir / "compare.png")
