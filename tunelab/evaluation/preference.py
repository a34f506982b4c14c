"""Did preference tuning change what the model prefers? Measured on held-out rows, before and after, with CIs.

    before = logprobs(model, tokenizer, rows, template, system)      # on the model as training starts
    ...train...
    report = compare(before, logprobs(model, ...), rows, beta)      # {"before": {...}, "after": {...}, ...}

A row's score is the summed log-probability of its answer's tokens (through the EOS that ends it) after its prompt,
tokenized as generation sees them (`encode_prompt`, then the answer). For pairs: preference accuracy is the share
of rows whose chosen answer is the more likely one, the margin the mean log-probability difference; after
training, the implicit reward margin beta * ((chosen_after - chosen_before) - (rejected_after - rejected_before)),
the quantity DPO raises, with the model before training as the reference (which it is). For unpaired (kto) rows:
the mean change in log-probability of desirable and of undesirable answers, and the gap between the two. For grpo
(prompts): the mean reward (the objective's rewards, weighted) of the greedy answer to each held-out prompt.
Intervals are 95% percentile bootstraps over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config import RunConfig
from tunelab.console import info
from tunelab.data.preference import Judged, Pair, PreferenceSet, Prompted
from tunelab.data.templates import encode_prompt
from tunelab.evaluation.bootstrap import mean_interval
from tunelab.evaluation.likelihood import IGNORE_INDEX, sequence_logprobs
from tunelab.evaluation.rewards import reward_functions, total_rewards
from tunelab.inference.generation import Decoding, generate


def logprobs(model: Any, tokenizer: Any, rows: list[Any], template: str, system: str | None, batch_size: int = 8):
    """Per row: (chosen, rejected) log-probabilities for pairs, the answer's for judged rows."""
    sequences = []
    for row in rows:
        prompt = encode_prompt(tokenizer, row.prompt, template, system)
        answers = [row.chosen, row.rejected] if isinstance(row, Pair) else [row.completion]
        for answer in answers:
            ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            sequences.append((prompt + ids, [IGNORE_INDEX] * len(prompt) + ids))
    scores = sequence_logprobs(model, sequences, batch_size)
    if rows and isinstance(rows[0], Judged):
        return scores
    return list(zip(scores[0::2], scores[1::2], strict=True))


def rewards(model: Any, tokenizer: Any, rows: list[Prompted], cfg: RunConfig) -> dict[str, Any]:
    """Each held-out prompt's greedy answer, its weighted reward, and each reward's mean."""
    objective, batch = cfg.objective, cfg.train.per_device_eval_batch_size
    decoding = Decoding(max_new_tokens=objective.max_completion_length)
    prompts = [row.prompt for row in rows]
    answers = generate(
        model, tokenizer, prompts, decoding, batch_size=batch, template=cfg.data.template, system=cfg.data.system
    )
    keys = sorted({key for row in rows for key in row.columns})
    columns = {key: [row.columns.get(key) for row in rows] for key in keys}
    functions, weights = reward_functions(objective.rewards)
    totals, means = total_rewards(functions, weights, prompts, answers, columns)
    return {"totals": totals, "by_reward": means, "examples": answers[:3]}


def _stat(values: list[float]) -> dict[str, Any]:
    mean = sum(values) / len(values) if values else float("nan")
    return {"mean": mean, "ci95": list(mean_interval(values))}


def pair_summary(scores: list[tuple[float, float]]) -> dict[str, Any]:
    wins = [1.0 if chosen > rejected else 0.0 for chosen, rejected in scores]
    return {
        "preference_accuracy": _stat(wins),
        "logprob_margin": _stat([chosen - rejected for chosen, rejected in scores]),
    }


def compare(before: list[Any], after: list[Any], rows: list[Any], beta: float | None) -> dict[str, Any]:
    """The held-out report: each side's summary, and what moved between them."""
    if rows and isinstance(rows[0], Prompted):
        change = [a - b for a, b in zip(after["totals"], before["totals"], strict=True)]
        sides = {
            side: {"reward": _stat(scores["totals"]), "by_reward": scores["by_reward"], "examples": scores["examples"]}
            for side, scores in (("before", before), ("after", after))
        }
        return {"rows": len(rows), **sides, "reward_change": _stat(change)}
    if rows and isinstance(rows[0], Judged):
        change = [a - b for a, b in zip(after, before, strict=True)]
        good = [c for c, row in zip(change, rows, strict=True) if row.desirable]
        bad = [c for c, row in zip(change, rows, strict=True) if not row.desirable]
        gap = (sum(good) / len(good) - sum(bad) / len(bad)) if good and bad else float("nan")
        return {
            "rows": len(rows),
            "desirable_logprob_change": _stat(good),
            "undesirable_logprob_change": _stat(bad),
            "gap": gap,
        }
    report: dict[str, Any] = {"rows": len(rows), "before": pair_summary(before), "after": pair_summary(after)}
    if beta is not None:
        rewards = [beta * ((ca - cb) - (ra - rb)) for (cb, rb), (ca, ra) in zip(before, after, strict=True)]
        report["reward_margin"] = _stat(rewards)
        report["reward_accuracy"] = _stat([1.0 if r > 0 else 0.0 for r in rewards])
    return report


def summary(report: dict[str, Any]) -> str:
    """One line for the console."""

    def show(stat: dict[str, Any], percent: bool = False) -> str:
        scale, unit = (100, "%") if percent else (1, "")
        low, high = (scale * v for v in stat["ci95"])
        return f"{scale * stat['mean']:.1f}{unit} [{low:.1f}, {high:.1f}]"

    if "reward_change" in report:
        before, after = report["before"]["reward"], report["after"]["reward"]
        return f"held-out prompts ({report['rows']}): mean reward {show(before)} -> {show(after)}"
    if "before" in report:
        before, after = report["before"], report["after"]
        line = (
            f"held-out pairs ({report['rows']}): preference accuracy {show(before['preference_accuracy'], True)}"
            f" -> {show(after['preference_accuracy'], True)}; log-prob margin {show(before['logprob_margin'])}"
            f" -> {show(after['logprob_margin'])}"
        )
        return line + (f"; reward margin {show(report['reward_margin'])}" if "reward_margin" in report else "")
    return (
        f"held-out answers ({report['rows']}): log-prob change desirable "
        f"{show(report['desirable_logprob_change'])}, undesirable {show(report['undesirable_logprob_change'])}"
    )


@dataclass
class HeldOut:
    """The held-out rows of a preference run, scored on the model as training starts; `report` scores them again."""

    cfg: RunConfig
    tokenizer: Any
    rows: list[Any]
    before: list[Any]

    @classmethod
    def of(cls, cfg: RunConfig, tokenizer: Any, rows: Any, model: Any) -> HeldOut | None:
        """None for sft (its held-out measures are the eval metrics) and when there are no held-out rows."""
        if not isinstance(rows, PreferenceSet):
            return None
        if not rows.validation:
            info("no held-out rows, so what training changed is not measured: set data.val_size (e.g. 0.1)")
            return None
        info(f"scoring {len(rows.validation)} held-out rows on the model before training")
        return cls(cfg, tokenizer, rows.validation, cls._score(cfg, tokenizer, rows.validation, model))

    @staticmethod
    def _score(cfg: RunConfig, tokenizer: Any, rows: list[Any], model: Any) -> Any:
        if isinstance(rows[0], Prompted):
            return rewards(model, tokenizer, rows, cfg)
        batch = cfg.train.per_device_eval_batch_size
        return logprobs(model, tokenizer, rows, cfg.data.template, cfg.data.system, batch)

    def report(self, model: Any) -> dict[str, Any]:
        # Only DPO and KTO have the implicit reward beta * log-ratio (ORPO has no reference; GRPO its own rewards).
        beta = getattr(self.cfg.objective, "beta", None) if self.cfg.objective.name in ("dpo", "kto") else None
        result = compare(self.before, self._score(self.cfg, self.tokenizer, self.rows, model), self.rows, beta)
        info(summary(result))
        return result
