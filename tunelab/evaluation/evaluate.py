"""`tunelab eval MODEL_OR_RUN --data test.jsonl --metrics rougeL,bleu`: generate, score, report.

    job = prepare("runs/demo", Path("test.jsonl"), ["json_fields", "exact_match"])  # checks, no weights
    result = run(job)   # generate, score, write metrics.json, predictions.jsonl, report.md to job.output_dir
    (`tunelab eval` is run(prepare(...)).)

A run directory brings its own prompt format, template and system prompt; a plain model takes them
from `--config` (or the defaults).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab import artifacts, data
from tunelab.config import RunConfig, validate
from tunelab.console import console, info
from tunelab.data.evalset import test_name, test_paths
from tunelab.errors import ConfigError
from tunelab.evaluation.judge import RulesCheck, judge_texts
from tunelab.evaluation.metrics import unknown_metrics
from tunelab.evaluation.predict import predict
from tunelab.evaluation.rules import Verdict, breaks_any, rule_report
from tunelab.evaluation.scoring import best_and_worst, format_value, score_all
from tunelab.inference.generation import Decoding, encode_prompt
from tunelab.inference.loading import Loaded, load_for_inference, run_config


@dataclass
class EvalResult:
    source: str
    test_file: str
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    main: str
    rows: list[dict[str, Any]]  # input, reference, output, scores
    seconds_per_example: float
    prompt_tokens_per_example: float
    rules: dict[str, Any] | None = None  # with --rules: the judge, its prompt, the numbered rules (add_rules)
    # Several tasks: each task's rows, metrics and intervals (the rows' `task`), beside the metrics of all rows.
    by_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("rows")
        return out


def run_config_for(ref: str, config_path: Path | None, test_file: Path) -> RunConfig:
    """The config that says how prompts are rendered: the run's own, --config, or defaults."""
    if artifacts.looks_like_run(ref):
        return run_config(ref)[1]
    if config_path is not None:
        from tunelab.config import load

        return load(config_path)
    return validate({"data": {"train": str(test_file)}})


def test_file_for(ref: str, config_path: Path | None, given: Path | None) -> Path:
    """--data, else the config's (or the run's) eval.test; a clear error when there is neither."""
    if given is not None:
        return given
    source = config_path if config_path is not None else ref
    cfg = run_config_for(ref, config_path, Path("-")) if artifacts.looks_like_run(ref) or config_path else None
    if cfg is None or cfg.eval.test is None:
        raise ConfigError(f"{source}: no test data; pass --data test.jsonl, or set eval.test in the config")
    return cfg.eval.test


def default_output_dir(ref: str) -> Path:
    return Path(ref) / "eval" if artifacts.looks_like_run(ref) else Path("runs/eval")


OUTPUT_FILES = ("metrics.json", "predictions.jsonl", "report.md")


@dataclass(frozen=True)
class EvalJob:
    """An evaluation with every check that needs no weights done: the test rows read, the metrics known, the
    output free to write (or --overwrite given)."""

    ref: str
    cfg: RunConfig
    test_file: Path
    examples: list[Any]
    metrics: list[str]
    output_dir: Path
    trust_remote_code: bool = False
    check: RulesCheck | None = None


def prepare(
    ref: str,
    data_file: Path | None,
    metrics: list[str] | None,
    config_path: Path | None = None,
    output_dir: Path | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    check: RulesCheck | None = None,
) -> EvalJob:
    """The preflight of `tunelab eval`: a typo in a metric or a missing file costs seconds, not a generation."""
    test_file = test_file_for(ref, config_path, data_file)
    cfg = run_config_for(ref, config_path, test_file)
    metrics = metrics or cfg.eval.metrics
    out = output_dir or default_output_dir(ref)
    problems = unknown_metrics(metrics)
    if problems:
        raise ConfigError(problems[0], problems[1:])
    examples = data.read_eval_examples(test_file, cfg)  # bad rows are named before the output is looked at
    artifacts.check_outputs([out / name for name in OUTPUT_FILES], overwrite, "--output-dir")
    if artifacts.looks_like_run(ref):
        for source in cfg.data.sources():
            for test_path in test_paths(test_file):
                warn_about_training_data(source.path, test_path)
    return EvalJob(ref, cfg, test_file, examples, metrics, out, trust_remote_code, check)


def warn_about_training_data(train: Path, test_file: Path) -> None:
    """A run's test set that copies its training rows, or drifts from them, said before the model loads (the
    lexical tests and the copy check only, no encoder: 1.3 s on the demo's data, 2 busy EPYC Zen 4 cores)."""
    from rich.markup import escape  # paths with [brackets] printed as they are

    from tunelab.evaluation.drift import check_against_training

    if not train.exists():
        info(
            f"note: the run's training data {escape(str(train))} is not here; the test set was not checked against it"
        )
        return
    for line in check_against_training(train, test_file):
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)  # one line: paths stay whole


def run(job: EvalJob, **options: Any) -> EvalResult:
    """Load the model, generate, score, and write metrics.json, predictions.jsonl and report.md."""
    loaded = load_with_prompt_layout(job.ref, job.cfg, job.trust_remote_code)
    result = evaluate_loaded(loaded, job.cfg, job.test_file, job.metrics, job.examples, **options)
    if job.check is not None:
        del loaded  # the judge may be as large as the model: one at a time
        add_rules(result, job.check, judge_rows(job.check, result.rows))
    write(result, job.output_dir)
    return result


def load_with_prompt_layout(ref: str, cfg: RunConfig, trust_remote_code: bool = False) -> Loaded:
    """A model or run for inference; a run brings its template and system prompt, a plain model takes `cfg`'s."""
    loaded = load_for_inference(ref, trust_remote_code=trust_remote_code)
    if artifacts.looks_like_run(ref):
        return loaded
    return Loaded(loaded.model, loaded.tokenizer, cfg.data.template, cfg.data.system, loaded.source)


def evaluate_loaded(
    loaded: Loaded,
    cfg: RunConfig,
    test_file: Path,
    metrics: list[str],
    examples: list[Any] | None = None,
    resamples: int | None = None,
) -> EvalResult:
    """Score `loaded` on the test file (or on given EvalExamples, e.g. few-shot ones)."""
    examples = examples if examples is not None else data.read_eval_examples(test_file, cfg)
    decoding = Decoding(max_new_tokens=cfg.eval.max_new_tokens)
    started = time.perf_counter()
    outputs = predict(loaded, examples, decoding, batch_size=cfg.eval.batch_size)
    seconds = (time.perf_counter() - started) / len(examples)
    references = [e.reference for e in examples]
    scored = score_all(outputs, references, metrics, cfg.eval.bootstrap_resamples if resamples is None else resamples)
    prompt_tokens = [
        len(encode_prompt(loaded.tokenizer, e.messages, loaded.template, loaded.system)) for e in examples
    ]
    rows = [
        {"line": e.line, "input": e.messages[-1]["content"], "reference": e.reference, "output": o, "scores": s}
        | ({"task": e.task} if e.task is not None else {})
        for e, o, s in zip(examples, outputs, scored.row_scores, strict=True)
    ]
    result = EvalResult(
        loaded.source,
        test_name(test_file),
        scored.metrics,
        scored.intervals,
        scored.main,
        rows,
        seconds,
        sum(prompt_tokens) / len(prompt_tokens),
        by_task=per_task(examples, outputs, metrics, cfg.eval.bootstrap_resamples if resamples is None else resamples),
    )
    return result


def per_task(examples: list[Any], outputs: list[str], metrics: list[str], resamples: int) -> dict[str, dict[str, Any]]:
    """Each task's metrics with their intervals, scored on its rows alone (empty when no row names a task)."""
    tasks = list(dict.fromkeys(e.task for e in examples if e.task is not None))
    report = {}
    for task in tasks:
        picked = [(e.reference, o) for e, o in zip(examples, outputs, strict=True) if e.task == task]
        scored = score_all([o for _, o in picked], [r for r, _ in picked], metrics, resamples)
        report[task] = {"rows": len(picked), "metrics": scored.metrics, "intervals": scored.intervals}
    return report


def judge_rows(check: RulesCheck, rows: list[dict[str, Any]]) -> list[list[Verdict]]:
    return judge_texts(check, [r["input"] for r in rows], [r["output"] for r in rows])


def add_rules(result: EvalResult, check: RulesCheck, verdicts: list[list[Verdict]], resamples: int = 1000) -> None:
    """The share of answers breaking any rule (and each rule) joins the metrics, each row gets its verdicts (with
    the judge's raw reply), and the result records the judge, its prompt and the rules for an audit."""
    report = rule_report(verdicts, resamples)
    result.metrics.update(report.metrics)
    result.intervals.update(report.intervals)
    for row, row_verdicts in zip(result.rows, verdicts, strict=True):
        row["verdicts"] = [v.to_dict() for v in row_verdicts]
        row["scores"]["rules_broken"] = float(breaks_any(row_verdicts))
    result.rules = check.audit() | {"unclear_verdicts": report.unclear}


def markdown(result: EvalResult, n_examples: int = 5) -> str:
    lines = [f"# Evaluation of {result.source} on {result.test_file} ({len(result.rows)} rows)", ""]
    lines += ["| metric | value (95% CI) |", "|---|---:|"]
    for key, value in result.metrics.items():
        lines.append(f"| {key} | {format_value(key, value, result.intervals.get(key))} |")
    lines += task_table(result)
    if result.rules:
        lines += ["", f"Rules (judge: {result.rules['judge']['model']}; rules_broken = any rule broken):", ""]
        lines += [f"{number}. {rule}" for number, rule in result.rules["rules"].items()]
    best, worst = best_and_worst(result.rows, result.main, n_examples)
    for title, rows in (
        (f"Best {n_examples} by {result.main}", best),
        (f"Worst {n_examples} by {result.main}", worst),
    ):
        lines += ["", f"## {title}", ""]
        for r in rows:
            score = format_value(result.main, r["scores"].get(result.main, 0.0))
            lines.append(f"- line {r['line']} ({score}): `{_short(r['input'])}` → `{_short(r['output'])}`")
            lines.append(f"  expected `{_short(r['reference'])}`")
    return "\n".join(lines) + "\n"


def task_table(result: EvalResult) -> list[str]:
    """Several tasks: one row per task, each metric with its interval."""
    if not result.by_task:
        return []
    keys = list(result.metrics)
    lines = ["", "Per task:", "", "| task | rows | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for task, part in result.by_task.items():
        cells = [
            format_value(k, part["metrics"][k], part["intervals"].get(k)) if k in part["metrics"] else "" for k in keys
        ]
        lines.append(f"| {task} | {part['rows']} | " + " | ".join(cells) + " |")
    return lines


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write(result: EvalResult, out_dir: Path) -> None:
    """metrics.json, predictions.jsonl and report.md, each written atomically."""
    artifacts.write_json(out_dir / "metrics.json", result.to_dict())
    artifacts.write_text(out_dir / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in result.rows))
    artifacts.write_text(out_dir / "report.md", markdown(result))
