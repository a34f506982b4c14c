"""`tunelab feedback MODEL --data prompts.jsonl --rules rules.txt --judge JUDGE`: AI feedback in place of labels.

    job = prepare("runs/sft", Path("train.jsonl"), RulesCheck.prepare(...), Sampling(samples=4), ...)  # no weights
    summary = run(job)    # sample, judge, pair; writes job.output_dir whole, atomically

The model answers every prompt `samples` times (the first greedily, the rest sampled, seeded); the judge says of
each answer whether it breaks each rule; for every prompt whose answers differ, the one that broke the fewest rules
becomes `chosen` and the one that broke the most `rejected` (ties on the count go to the judge's summed probability
of a break, where it gives one). Prompts whose answers all broke the same number of rules give no pair: there is
nothing to prefer.

The output folder holds what a person needs to audit the pairs before training on them:
    pairs.jsonl       {prompt, chosen, rejected, chosen_broken, rejected_broken, source}: format `pairs`
    judged.jsonl      every answer with clear verdicts as {prompt, completion, label}: format `kto` (label: it
                      broke no rule), for objective kto, which needs no pairs and so keeps every prompt
    verdicts.jsonl    every sampled answer with each rule's verdict and the judge's raw reply
    judge_prompt.txt  the prompt the judge saw, with {rule} {prompt} {answer} where they went
    rules.txt         the rules, numbered as the verdicts number them
    feedback.json     counts, the share of sampled answers breaking each rule, the model, judge and decoding
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunelab import artifacts, data
from tunelab.config import RunConfig
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.evaluation.evaluate import load_with_prompt_layout, run_config_for
from tunelab.evaluation.judge import RulesCheck, judge_texts
from tunelab.evaluation.rules import Verdict, breaks_any, broken_count, rule_report
from tunelab.inference.generation import Decoding, generate

OUTPUT_FILES = ("pairs.jsonl", "judged.jsonl", "verdicts.jsonl", "judge_prompt.txt", "rules.txt", "feedback.json")


@dataclass(frozen=True)
class Sampling:
    """How many answers per prompt and how they are drawn: the model's own answers (on-policy), mostly sampled, since
    the pairs need answers that differ."""

    samples: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 16
    # The first answer of each prompt is the greedy one: what the model says when deployed. Sampled answers alone
    # can miss it: the built-in model's greedy replies broke a reply rule 56% of the time, its samples at
    # temperature 0.8 only 3% (README, "Rules instead of labels"), so pairs from samples alone rarely contain the
    # behaviour the rules are there to change.
    greedy_first: bool = True

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ConfigError(f"--samples {self.samples}: need at least 2 answers per prompt to compare")
        if self.temperature <= 0:
            raise ConfigError("--temperature must be above 0: greedy answers to one prompt are all the same")


@dataclass(frozen=True)
class FeedbackJob:
    ref: str
    cfg: RunConfig
    examples: list[Any]
    check: RulesCheck
    sampling: Sampling
    output_dir: Path
    trust_remote_code: bool = False


def prepare(
    ref: str,
    data_file: Path,
    check: RulesCheck,
    sampling: Sampling,
    config_path: Path | None,
    output_dir: Path,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> FeedbackJob:
    """Every check that needs no weights: the rules, judge, prompts and output folder."""
    cfg = run_config_for(ref, config_path, data_file)
    examples = data.read_eval_examples(data_file, cfg)
    if output_dir.is_file():
        raise ConfigError(f"--output {output_dir} is a file; give a folder")
    foreign = artifacts.foreign_entries(output_dir, frozenset(OUTPUT_FILES))
    if foreign:  # the folder is replaced whole: never over files tunelab did not write
        raise ConfigError(f"--output {output_dir} holds other files ({', '.join(foreign[:3])}); give a new folder")
    artifacts.check_outputs([output_dir / name for name in OUTPUT_FILES], overwrite, "--output")
    return FeedbackJob(ref, cfg, examples, check, sampling, output_dir, trust_remote_code)


def run(job: FeedbackJob) -> dict[str, Any]:
    """Sample, judge, pair, write; returns the summary written to feedback.json."""
    answers = sample(job)
    prompts = [e.messages[-1]["content"] for e in job.examples for _ in range(job.sampling.samples)]
    verdicts = judge_texts(job.check, prompts, answers)
    pairs = choose_pairs(job.examples, answers, verdicts, job.sampling.samples)
    summary = summarize(job, verdicts, pairs)
    write(job, answers, verdicts, pairs, summary)
    return summary


def sample(job: FeedbackJob) -> list[str]:
    """`samples` answers per example, example by example (greedy first); the model is freed before the judge loads."""
    loaded = load_with_prompt_layout(job.ref, job.cfg, job.trust_remote_code)
    s = job.sampling
    sampled = s.samples - s.greedy_first
    greedy = "1 greedy, " if s.greedy_first else ""
    info(f"{s.samples} answers to each of {len(job.examples)} prompts ({greedy}{sampled} sampled)")
    answers = [[] for _ in job.examples]
    runs = [(1, Decoding(max_new_tokens=s.max_new_tokens))] if s.greedy_first else []
    runs.append((sampled, Decoding(max_new_tokens=s.max_new_tokens, temperature=s.temperature, seed=s.seed)))
    for copies, decoding in runs:
        messages = [e.messages for e in job.examples for _ in range(copies)]
        texts = generate(
            loaded.model,
            loaded.tokenizer,
            messages,
            decoding,
            batch_size=s.batch_size,
            template=loaded.template,
            system=loaded.system,
            progress=True,
        )
        for i, text in enumerate(texts):
            answers[i // copies].append(text)
    del loaded
    gc.collect()
    return [text for group in answers for text in group]


def choose_pairs(
    examples: list[Any], answers: list[str], verdicts: list[list[Verdict]], samples: int
) -> list[dict[str, Any]]:
    """Per example, the answer breaking the fewest rules against the one breaking the most, where they differ."""
    pairs = []
    for i, example in enumerate(examples):
        group = range(i * samples, (i + 1) * samples)
        ranked = sorted(group, key=lambda j: (broken_count(verdicts[j]), _p_sum(verdicts[j])))
        best, worst = ranked[0], ranked[-1]
        if broken_count(verdicts[best]) < broken_count(verdicts[worst]):
            pairs.append(
                {
                    "prompt": example.messages,
                    "chosen": answers[best],
                    "rejected": answers[worst],
                    "chosen_broken": _broken_rules(verdicts[best]),
                    "rejected_broken": _broken_rules(verdicts[worst]),
                    "source": example.where,
                }
            )
    return pairs


def _p_sum(verdicts: list[Verdict]) -> float:
    return sum(v.p_break or 0.0 for v in verdicts)


def _broken_rules(verdicts: list[Verdict]) -> list[int]:
    """1-based numbers of the rules broken, as rules.txt numbers them."""
    return [v.rule + 1 for v in verdicts if v.breaks]


def summarize(job: FeedbackJob, verdicts: list[list[Verdict]], pairs: list[dict]) -> dict[str, Any]:
    report = rule_report(verdicts)
    return {
        "model": job.ref,
        "judge": job.check.description,
        "rules": job.check.rules,
        "prompts": len(job.examples),
        "answers": len(verdicts),
        "pairs": len(pairs),
        "prompts_without_pair": len(job.examples) - len(pairs),
        "sampled_answers_breaking": report.metrics,
        "sampled_answers_breaking_ci95": report.intervals,
        "unclear_verdicts": report.unclear,
        "sampling": asdict(job.sampling),
    }


def write(job: FeedbackJob, answers: list[str], verdicts: list[list[Verdict]], pairs: list[dict], summary: dict):
    """All six files into a temporary folder, then the folder moved into place: a crash leaves no half set."""
    out = job.output_dir
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    samples = job.sampling.samples
    rows = [
        {
            "source": job.examples[j // samples].where,
            "prompt": job.examples[j // samples].messages[-1]["content"],
            "sample": j % samples,
            "answer": answer,
            "broken": _broken_rules(verdicts[j]),
            "verdicts": [v.to_dict() for v in verdicts[j]],
        }
        for j, answer in enumerate(answers)
    ]
    artifacts.write_text(tmp / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
    judged = [
        {"prompt": job.examples[j // samples].messages, "completion": answer, "label": not breaks_any(verdicts[j])}
        for j, answer in enumerate(answers)
        if all(v.breaks is not None for v in verdicts[j])
    ]
    artifacts.write_text(tmp / "judged.jsonl", "".join(json.dumps(r) + "\n" for r in judged))
    artifacts.write_text(tmp / "verdicts.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    artifacts.write_text(tmp / "judge_prompt.txt", job.check.template)
    artifacts.write_text(tmp / "rules.txt", "".join(f"{i}. {r}\n" for i, r in enumerate(job.check.rules, start=1)))
    artifacts.write_json(tmp / "feedback.json", summary)
    artifacts.replace_dir(tmp, out)
