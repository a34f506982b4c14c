"""Which method to use: the rule, in one place.

    choice = recommend(candidates, available_bytes)     # Recommendation(label, reason)

The rule:
1. A method fits when its estimated peak memory leaves HEADROOM (20%) of the available memory free:
   estimates are not exact, and the machine runs other things.
2. `full` is recommended when it fits and an epoch takes at most FULL_SLOWDOWN_LIMIT (3x) as long as
   with `lora`: it trains every weight, so it is the most capable.
3. Otherwise the first method that fits in CAPABILITY order, each method's `capability` in the registry
   (tunelab.methods): lora, qlora 8-bit, qlora 4-bit, adapter, freeze, ia3, prefix_tuning, prompt_tuning
   (roughly: how much of the model's behaviour each can change, from the PEFT literature; quantizing the base
   costs a little quality, so plain lora comes first).
4. When nothing fits, the method that needs least memory, with what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab import methods

HEADROOM = 0.20
FULL_SLOWDOWN_LIMIT = 3.0
# Every plan row's label (tunelab.planning.planner.ROWS), most capable first; ties in registry order.
CAPABILITY = tuple(
    label
    for label, _, _ in sorted(
        (row for spec in methods.METHODS.values() for row in spec.plan_rows()), key=lambda row: row[2]
    )
)


@dataclass(frozen=True)
class Candidate:
    label: str  # a CAPABILITY entry
    memory: int | None  # estimated peak bytes; None when the method cannot run here
    seconds_per_epoch: float | None


@dataclass(frozen=True)
class Recommendation:
    label: str
    reason: str


def budget(available: int) -> int:
    return int(available * (1 - HEADROOM))


def fits(memory: int | None, available: int) -> bool:
    return memory is not None and memory <= budget(available)


def recommend(candidates: list[Candidate], available: int) -> Recommendation:
    by_label = {c.label: c for c in candidates}
    ordered = [by_label[label] for label in CAPABILITY if label in by_label]
    fitting = [c for c in ordered if fits(c.memory, available)]
    if not fitting:
        return nothing_fits(ordered, available)
    full, lora = by_label.get("full"), by_label.get("lora")
    slowdown = _ratio(full, lora)
    if fitting[0].label == "full" and (slowdown is None or slowdown <= FULL_SLOWDOWN_LIMIT):
        return Recommendation("full", f"it fits with {headroom_text(full.memory, available)} and trains every weight")
    best = next(c for c in fitting if c.label != "full")
    if full is not None and fits(full.memory, available):
        why_not_full = f"full fits but an epoch would take {slowdown:.1f}x as long as with lora"
    elif full is not None and full.memory is not None:
        why_not_full = (
            f"full needs {gb(full.memory)}, more than {gb(budget(available))} ({pct(1 - HEADROOM)} of available)"
        )
    else:
        why_not_full = "full cannot run here"
    return Recommendation(best.label, f"{why_not_full}; {best.label} is the most capable method that fits")


def nothing_fits(ordered: list[Candidate], available: int) -> Recommendation:
    runnable = [c for c in ordered if c.memory is not None]
    if not runnable:
        return Recommendation("none", "no method can run with this model here")
    least = min(runnable, key=lambda c: c.memory)
    return Recommendation(
        least.label,
        f"nothing fits in {gb(budget(available))} ({pct(1 - HEADROOM)} of available); {least.label} needs least "
        f"({gb(least.memory)}): lower train.per_device_train_batch_size or train.max_seq_length",
    )


def _ratio(full: Candidate | None, lora: Candidate | None) -> float | None:
    if full is None or lora is None or not full.seconds_per_epoch or not lora.seconds_per_epoch:
        return None
    return full.seconds_per_epoch / lora.seconds_per_epoch


def headroom_text(memory: int, available: int) -> str:
    return f"{gb(available - memory)} ({pct(1 - memory / available)}) to spare"


def gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"
