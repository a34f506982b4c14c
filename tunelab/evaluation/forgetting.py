"""Catastrophic forgetting, measured on every run: the retention probe before and after training.

    probe = load_probe(cfg.forgetting)
    base = score(model, tokenizer, probe)          # before the first step
    after = score(trained_model, tokenizer, probe)
    report = compare(base, after, cfg.forgetting)  # base, after, delta, and any limit exceeded

The probe: general-knowledge multiple choice scored by log-likelihood (accuracy) and general
English passages scored by perplexity; built in, or the user's own sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tunelab.config.schema import ForgettingConfig
from tunelab.console import info
from tunelab.errors import TunelabError
from tunelab.evaluation import probes
from tunelab.evaluation.bootstrap import mean_interval
from tunelab.evaluation.likelihood import multiple_choice, perplexity


class ForgettingError(TunelabError):
    """The fine-tune forgot more than `forgetting.max_drop` / `max_perplexity_ratio` allow."""


@dataclass(frozen=True)
class Probe:
    mc: list[Any]
    texts: list[str]


@dataclass(frozen=True)
class ProbeScore:
    accuracy: float  # share of multiple-choice questions answered right
    perplexity: float  # token-weighted, over the passages
    questions: int
    passages: int
    right: str = ""  # one character per question, "1" answered right: the drop's paired interval needs them


def answers(chosen: list[int], mc: list[Any]) -> str:
    return "".join("1" if c == item.answer else "0" for c, item in zip(chosen, mc, strict=True))


def load_probe(cfg: ForgettingConfig) -> Probe:
    mc = probes.load_mc(cfg.mc) if cfg.mc else probes.builtin_mc()
    texts = probes.load_texts(cfg.texts) if cfg.texts else probes.builtin_texts()
    if cfg.max_items:
        mc, texts = mc[: cfg.max_items], texts[: cfg.max_items]
    return Probe(mc, texts)


def score(model: Any, tokenizer: Any, probe: Probe, batch_size: int = 8) -> ProbeScore:
    # Choices scored by their own text, not by letter: small models cannot map letters to answers
    # (SmolLM2-135M: 25.5% lettered, chance; 59.1% by choice text), and a probe at chance cannot show a drop.
    mc = multiple_choice(model, tokenizer, probe.mc, batch_size=batch_size, style="choice_text")
    ppl = perplexity(model, tokenizer, probe.texts, batch_size=batch_size)["perplexity"]
    return ProbeScore(mc.accuracy, ppl, len(probe.mc), len(probe.texts), answers(mc.chosen, probe.mc))


def evaluator(tokenizer: Any, probe: Probe):
    """model -> {probe_accuracy, probe_perplexity}: the probe at each evaluation during training, so the
    logs show when forgetting sets in (and metric_for_best_model may name probe_accuracy)."""

    def evaluate(model: Any) -> dict[str, float]:
        result = score(model, tokenizer, probe)
        return {"probe_accuracy": result.accuracy, "probe_perplexity": result.perplexity}

    return evaluate


def compare(base: ProbeScore, after: ProbeScore, cfg: ForgettingConfig) -> dict[str, Any]:
    """base, after, the delta (after − base, accuracy in points; perplexity as after/base) and violations."""
    delta = {
        "accuracy_points": 100 * (after.accuracy - base.accuracy),
        "perplexity_ratio": after.perplexity / base.perplexity,
    }
    if base.right and len(base.right) == len(after.right):  # the same questions: a paired interval of the change
        low, high = mean_interval([float(a) - float(b) for b, a in zip(base.right, after.right, strict=True)])
        delta["accuracy_points_ci95"] = [100 * low, 100 * high]
    exceeded = []
    if cfg.max_drop is not None and -delta["accuracy_points"] > cfg.max_drop:
        exceeded.append(
            f"probe accuracy fell {-delta['accuracy_points']:.1f} points (limit forgetting.max_drop={cfg.max_drop:g})"
        )
    if cfg.max_perplexity_ratio is not None and delta["perplexity_ratio"] > cfg.max_perplexity_ratio:
        exceeded.append(
            f"probe perplexity rose {delta['perplexity_ratio']:.2f}x (limit "
            f"forgetting.max_perplexity_ratio={cfg.max_perplexity_ratio:g})"
        )
    return {"base": asdict(base), "after": asdict(after), "delta": delta, "exceeded": exceeded}


def summary(report: dict[str, Any]) -> str:
    base, after, delta = report["base"], report["after"], report["delta"]
    interval = delta.get("accuracy_points_ci95")
    spread = f", 95% CI {interval[0]:+.1f} to {interval[1]:+.1f}" if interval else ""
    return (
        f"forgetting: probe accuracy {100 * base['accuracy']:.1f}% → {100 * after['accuracy']:.1f}% "
        f"({delta['accuracy_points']:+.1f} points{spread}, {base['questions']} questions); perplexity "
        f"{base['perplexity']:.2f} → {after['perplexity']:.2f} ({delta['perplexity_ratio']:.2f}x)"
    )


def enforce(report: dict[str, Any], cfg: ForgettingConfig) -> None:
    """Warn about exceeded limits, or fail when the user asked for that (forgetting.fail=true)."""
    if not report["exceeded"]:
        return
    if cfg.fail:
        raise ForgettingError("the fine-tune forgot more than allowed", report["exceeded"])
    for line in report["exceeded"]:
        info(f"[yellow]warning:[/] {line}")
