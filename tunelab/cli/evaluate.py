"""Evaluation commands: eval, compare, feedback (and the rules/judge options they share), drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.app import (
    ConfigArg,
    JudgeModelOpt,
    JudgeOpt,
    JudgePromptOpt,
    MetricsOpt,
    OverwriteOpt,
    PromptConfigOpt,
    RulesOpt,
    TrustOpt,
    _split,
    app,
)
from tunelab.console import console
from tunelab.rag.encoder import DEFAULT_ENCODER


def _rules_check(rules, judge, judge_model, judge_prompt, trust_remote_code):
    from tunelab.evaluation.judge import RulesCheck

    return RulesCheck.prepare(rules, judge, judge_model, judge_prompt, trust_remote_code)


@app.command(
    "eval", epilog="Example:  tunelab eval runs/demo --data examples/support_tickets/test.jsonl --metrics json_fields"
)
def eval_(
    model: Annotated[str, typer.Argument(help="A run directory, built-in alias, local model dir, hub id or .gguf.")],
    data: Annotated[Path | None, typer.Option("--data", help="Test file (default: the config's eval.test).")] = None,
    metrics: MetricsOpt = None,
    config: PromptConfigOpt = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where metrics.json, predictions.jsonl, report.md go.")
    ] = None,
    overwrite: OverwriteOpt = False,
    rules: RulesOpt = None,
    judge: JudgeOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_prompt: JudgePromptOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Generate answers for a test set and score them: every metric with a 95% bootstrap interval."""
    from tunelab.evaluation import evaluate as evalmod

    check = _rules_check(rules, judge, judge_model, judge_prompt, trust_remote_code)
    job = evalmod.prepare(model, data, _split(metrics), config, output_dir, overwrite, trust_remote_code, check)
    result = evalmod.run(job)  # prepare ran every check that needs no weights
    console.print(evalmod.markdown(result), markup=False, soft_wrap=True)
    console.print(f"wrote {job.output_dir}/metrics.json, predictions.jsonl, report.md", markup=False)


@app.command(epilog="Example:  tunelab compare configs/demo.yaml --run runs/demo")
def compare(
    config: ConfigArg,
    run: Annotated[list[str] | None, typer.Option("--run", help="A fine-tuned run directory (repeatable).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Test file (default: the config's eval.test).")] = None,
    metrics: MetricsOpt = None,
    output_dir: Annotated[Path, typer.Option(help="Where compare.md/.json/.png go.")] = Path("runs/compare"),
    overwrite: OverwriteOpt = False,
    rules: RulesOpt = None,
    judge: JudgeOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_prompt: JudgePromptOpt = None,
    index: Annotated[
        Path | None,
        typer.Option("--index", help="An index (tunelab index): adds the arms rag and fine-tuned+rag."),
    ] = None,
    rag_k: Annotated[int, typer.Option(help="Passages retrieved per question (as many as fit are used).")] = 4,
    rag_mode: Annotated[str, typer.Option(help="Retrieval: hybrid, dense or lexical.")] = "hybrid",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Zero-shot vs few-shot vs RAG vs fine-tuned on one test set: which is worth it, and by how much."""
    from tunelab.evaluation import compare as comparemod
    from tunelab.evaluation.arms import Retrieval

    check = _rules_check(rules, judge, judge_model, judge_prompt, trust_remote_code)
    retrieval = Retrieval(index, rag_k, rag_mode) if index is not None else None
    job = comparemod.prepare(
        config, data, run or [], _split(metrics), output_dir, overwrite, trust_remote_code, check, retrieval
    )
    arms = comparemod.run(job)  # prepare ran every check that needs no weights
    console.print(comparemod.table(arms))
    for line in [comparemod.verdict(arms), *comparemod.rules_sentences(arms)]:
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"wrote {output_dir}/compare.md, compare.json, compare.png", markup=False)


@app.command(
    epilog="Example:  tunelab feedback runs/demo --data examples/support_tickets/train.jsonl "
    "--rules rules.txt --judge runs/judge --output runs/feedback"
)
def feedback(
    model: Annotated[str, typer.Argument(help="The model or run whose own answers are judged (the policy).")],
    data: Annotated[Path, typer.Option("--data", help="Prompts: any file `tunelab eval` reads.")],
    rules: Annotated[Path, typer.Option("--rules", help="Plain-text rules, one per line.")],
    judge: Annotated[str, typer.Option("--judge", help="A model or run tunelab loads, or an OpenAI-compatible URL.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for pairs.jsonl and the judge's verdicts.")],
    judge_model: JudgeModelOpt = None,
    judge_prompt: JudgePromptOpt = None,
    samples: Annotated[int, typer.Option(help="Answers sampled per prompt (at least 2).")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (above 0).")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 64,
    seed: int = 0,
    greedy_first: Annotated[
        bool, typer.Option(help="Make each prompt's first answer the greedy one (what the model says deployed).")
    ] = True,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together.")] = 16,
    config: PromptConfigOpt = None,
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """AI feedback: sample the model's answers, let a judge check them against your rules, write preference pairs."""
    from tunelab.evaluation import feedback as feedbackmod

    check = _rules_check(rules, judge, judge_model, judge_prompt, trust_remote_code)
    sampling = feedbackmod.Sampling(samples, temperature, max_new_tokens, seed, batch_size, greedy_first)
    job = feedbackmod.prepare(model, data, check, sampling, config, output, overwrite, trust_remote_code)
    summary = feedbackmod.run(job)
    shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["sampled_answers_breaking"].items())
    console.print(
        f"{summary['pairs']} pairs from {summary['prompts']} prompts ({summary['prompts_without_pair']} without a "
        f"difference to prefer); sampled answers breaking: {shares}",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"wrote {output}/pairs.jsonl (dpo, orpo), judged.jsonl (kto), and for an audit verdicts.jsonl, ...")


@app.command(
    epilog="Example:  tunelab drift examples/support_tickets/train.jsonl examples/larkspur_docs/train.jsonl "
    "--output-dir runs/drift"
)
def drift(
    reference: Annotated[
        str, typer.Argument(help="A data file, or a run directory (its training data: config.yaml data.train).")
    ],
    new: Annotated[Path, typer.Argument(help="The data to compare with it: a file of the same format.")],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "--output",
            help="Where drift.md, drift.json, drift.png go (default: RUN/drift for a run, else runs/drift).",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    encoder: Annotated[
        str, typer.Option(help="The sentence encoder of the embedding test: alias, dir or hub id.")
    ] = DEFAULT_ENCODER,
    embedding: Annotated[
        bool, typer.Option("--embedding/--no-embedding", help="Run the embedding test (loads the encoder).")
    ] = True,
    alpha: Annotated[
        float, typer.Option(help="Significance level of the verdict, Bonferroni-corrected across the tests.")
    ] = 0.01,
    permutations: Annotated[int, typer.Option(min=99, help="Random re-splits per permutation test.")] = 1999,
    seed: int = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Has the data moved? Lengths, words, labels and meaning compared, one verdict line, and train/test overlap."""
    from tunelab.evaluation import drift as driftmod

    output_dir = output_dir or driftmod.default_output_dir(reference)
    job = driftmod.prepare(
        reference,
        new,
        output_dir,
        overwrite,
        encoder if embedding else None,
        alpha,
        permutations,
        seed,
        trust_remote_code,
    )  # both files read and their formats checked before the encoder loads
    report = driftmod.run(job)
    if as_json:
        print(driftmod.to_json(report))
    for line in (report.verdict.line, report.overlap.line()):
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"wrote {output_dir}/drift.md, drift.json, drift.png", markup=False)
