"""Drift and contamination between two data files, by statistics alone (no model): `tunelab drift` and the
train/test check of `tunelab eval` build on this.

    ref, new = read_pair(Path("train.jsonl"), Path("new.jsonl"))  # one format, or a one-line DataError
    signals = lexical_signals(ref, new)  # per field: lengths (KS), words (Jensen-Shannon, permutation), labels
    verdict = decide(signals, alpha=0.01)  # Bonferroni across the tests; verdict.line names the strongest
    overlap = near_duplicates(ref, new)  # the new rows that copy a reference row (MinHash) or a 13-word span

Every signal tests "both files are samples of one distribution" with a p-value. Word distributions are compared
against random re-splits of the pooled rows (a permutation test), not against a chi-square table: words within a
row are not independent draws, and the chi-square of word counts called random halves of the support tickets
different. Near-duplicates are looked for on the prompt side of each row (what a model reads): a test question a
model trained on counts as seen whatever its answer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunelab.data import formats
from tunelab.data.readers import read
from tunelab.errors import DataError

# The text fields compared, per format; chat rows give the text of their user and assistant turns.
TEXT_FIELDS = {
    "chat": ("user", "assistant"),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
    "classification": ("text",),
    "text": ("text",),
}
# The fields a model reads, where near-duplicates are looked for.
PROMPT_SIDE = {"chat": "user", "prompt_completion": "prompt", "alpaca": "instruction", "classification": "text"}
ANSWER_SIDE = {"chat": "assistant", "prompt_completion": "completion", "alpaca": "output"}
MAX_ROWS = 10_000  # per file: a seeded sample above this keeps the permutation tests to seconds
PERMUTATIONS = 1999  # the smallest p-value a permutation test can give is 1/(1 + 1999) = 0.0005
# A JSON answer's key is a label field when it takes few values: the tickets' category (6), priority (4) and
# product (5) are; the Larkspur answers (a distinct value for most rows) are not.
MAX_LABEL_VALUES = 20
WORD = re.compile(r"\w+(?:'\w+)?")  # words, contractions kept whole (can't, I'd)


@dataclass(frozen=True)
class Sample:
    """One file's rows as the texts and labels drift compares (rows in file order, one entry per row)."""

    path: str
    format: str
    texts: dict[str, list[str]]
    labels: dict[str, list[str]]
    wheres: list[str]  # file:line of each row
    skipped: int = 0  # rows that could not be read or lack a text field

    def __len__(self) -> int:
        return len(self.wheres)

    def subsample(self, max_rows: int, seed: int = 0) -> Sample:
        """At most `max_rows` rows: a seeded random choice, kept in file order."""
        if len(self) <= max_rows:
            return self
        import random

        keep = sorted(random.Random(seed).sample(range(len(self)), max_rows))
        texts = {name: [values[i] for i in keep] for name, values in self.texts.items()}
        labels = {name: [values[i] for i in keep] for name, values in self.labels.items()}
        return replace(self, texts=texts, labels=labels, wheres=[self.wheres[i] for i in keep])


@dataclass(frozen=True)
class Signal:
    """One test of "same distribution": `statistic` is the test's own (KS D, JSD, chi-square, distance)."""

    kind: str  # lengths, words, labels, embedding
    field: str
    statistic: float
    p_value: float
    summary: str  # the numbers a reader needs, e.g. "median 24 vs 31 words"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.field} {'shares' if self.kind == 'labels' else self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: getattr(self, k) for k in ("kind", "field", "statistic", "p_value")}} | {
            "summary": self.summary,
            "detail": self.detail,
        }


def read_pair(reference: Path, new: Path) -> tuple[Sample, Sample]:
    """Both files, checked to hold rows of one format before anything is computed."""
    ref, other = read_sample(reference, "reference"), read_sample(new, "new")
    if ref.format != other.format:
        raise DataError(
            f"{reference} holds {ref.format} rows {formats.get(ref.format).FIELDS} and {new} holds {other.format} "
            f"rows {formats.get(other.format).FIELDS}: drift compares files of one format; convert one file to "
            "the other's fields"
        )
    return with_json_labels(ref, other)


def with_json_labels(ref: Sample, new: Sample) -> tuple[Sample, Sample]:
    """Both samples with the label fields of their JSON answers, chosen on the pooled answers, so that a key is a
    label field in both files or in neither (a small file alone would show too few values to tell)."""
    name = ANSWER_SIDE.get(ref.format)
    if name is None or name not in ref.texts or name not in new.texts:
        return ref, new
    pooled = json_labels(name, ref.texts[name] + new.texts[name])
    return (
        replace(ref, labels=ref.labels | {key: values[: len(ref)] for key, values in pooled.items()}),
        replace(new, labels=new.labels | {key: values[len(ref) :] for key, values in pooled.items()}),
    )


def read_sample(path: Path, role: str) -> Sample:
    records = read(path, role)
    parsed = [r for r in records if r.fields is not None]
    fmt = formats.majority_format([r.fields for r in parsed])
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the data format from the fields of the rows; drift reads the formats "
            f"{formats.describe()}"
        )
    rows = [(r.where, texts) for r in parsed if (texts := row_texts(fmt, r.fields)) is not None]
    if not rows:
        raise DataError(f"{path}: no row has the text fields of its format ({formats.get(fmt).FIELDS}); fix the rows")
    names = [n for n in TEXT_FIELDS[fmt] if any(texts[n].strip() for _, texts in rows)]
    texts = {n: [t[n] for _, t in rows] for n in names}
    labels = {"label": [t["label"] for _, t in rows]} if fmt == "classification" else {}
    return Sample(str(path), fmt, texts, labels, [where for where, _ in rows], len(records) - len(rows))


def row_texts(fmt: str, row: dict[str, Any]) -> dict[str, str] | None:
    """The row's text per field of its format; None for a row without them (a bad row, skipped here)."""
    if fmt == "chat":
        turns = row.get("messages")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            return None
        said = {
            role: "\n".join(str(t.get("content", "")) for t in turns if t.get("role") == role)
            for role in TEXT_FIELDS[fmt]
        }
        return said if said["user"].strip() else None
    out = {name: row.get(name) for name in TEXT_FIELDS[fmt]}
    if fmt == "alpaca" and out["input"] is None:
        out["input"] = ""
    if fmt == "classification":
        label = row.get("label")
        if not isinstance(label, str | int) or isinstance(label, bool):
            return None
        out["label"] = str(label)
    return out if all(isinstance(v, str) for v in out.values()) else None


def json_labels(field_name: str, answers: list[str]) -> dict[str, list[str]]:
    """The keys of JSON-object answers that take few values (category, priority, ...), as label fields."""
    objects = []
    for answer in answers:
        try:
            value = json.loads(answer)
        except ValueError:
            value = None
        objects.append(value if isinstance(value, dict) else None)
    if sum(o is not None for o in objects) < 0.9 * len(answers):
        return {}
    keys = Counter(k for o in objects if o for k, v in o.items() if isinstance(v, str | int | bool))
    labels = {}
    for key, count in keys.items():
        values = [str(o.get(key, "")) if o else "" for o in objects]
        if count >= 0.9 * len(answers) and len(set(values)) <= min(MAX_LABEL_VALUES, max(2, len(values) // 5)):
            labels[f"{field_name}.{key}"] = values
    return labels


def lexical_signals(ref: Sample, new: Sample, permutations: int = PERMUTATIONS, seed: int = 0) -> list[Signal]:
    """Lengths and words of each text field both files have, and each label field both have (at most MAX_ROWS
    rows of each file: a seeded sample of a larger one)."""
    ref, new = ref.subsample(MAX_ROWS, seed), new.subsample(MAX_ROWS, seed)
    signals = []
    for name in [n for n in ref.texts if n in new.texts]:
        signals.append(length_signal(name, ref.texts[name], new.texts[name]))
        signals.append(word_signal(name, ref.texts[name], new.texts[name], permutations, seed))
    for name in [n for n in ref.labels if n in new.labels]:
        signal = label_signal(name, ref.labels[name], new.labels[name])
        if signal is not None:
            signals.append(signal)
    return signals


def length_signal(name: str, ref: list[str], new: list[str]) -> Signal:
    import numpy as np
    from scipy.stats import ks_2samp

    a, b = (np.array([len(t.split()) for t in texts]) for texts in (ref, new))
    test = ks_2samp(a, b)
    summary = f"median {np.median(a):g} vs {np.median(b):g} words, KS D={test.statistic:.3f}"
    detail = {"mean": [float(a.mean()), float(b.mean())], "median": [float(np.median(a)), float(np.median(b))]}
    return Signal("lengths", name, float(test.statistic), float(test.pvalue), summary, detail)


def word_signal(name: str, ref: list[str], new: list[str], permutations: int, seed: int) -> Signal:
    """Jensen-Shannon divergence (base 2: 0 same, 1 disjoint) of the word unigrams, and what random re-splits of
    the pooled rows give: the divergence of two finite samples is never 0, and depends on their sizes."""
    counts, vocabulary = word_counts(ref + new)
    observed, null, p = permutation_test(counts, len(ref), jensen_shannon, permutations, seed)
    totals = [counts[: len(ref)].sum(axis=0).A1, counts[len(ref) :].sum(axis=0).A1]
    detail = {
        "random_splits_mean": float(null.mean()),
        "random_splits_p99": float(_quantile(null, 0.99)),
        "z": z_score(observed, null),
        "permutations": permutations,
    } | shifted_words(vocabulary, totals[1], totals[0])
    summary = f"JSD {observed:.3f} vs {null.mean():.3f} on random splits"
    return Signal("words", name, observed, p, summary, detail)


def word_counts(texts: list[str]) -> tuple[Any, list[str]]:
    """A sparse rows x words count matrix (lowercased \\w+ words) and its vocabulary."""
    import numpy as np
    from scipy.sparse import csr_matrix

    index: dict[str, int] = {}
    columns, values, starts = [], [], [0]
    for text in texts:
        row = Counter(index.setdefault(w, len(index)) for w in WORD.findall(text.lower()))
        columns += row.keys()
        values += row.values()
        starts.append(len(columns))
    matrix = csr_matrix((np.array(values, float), np.array(columns, int), np.array(starts)), (len(texts), len(index)))
    return matrix, list(index)


def jensen_shannon(a: Any, b: Any) -> Any:
    """JSD (bits) between the count vectors of each row of a and b."""
    import numpy as np
    from scipy.special import rel_entr

    p = a / np.maximum(a.sum(axis=1, keepdims=True), 1e-12)
    q = b / np.maximum(b.sum(axis=1, keepdims=True), 1e-12)
    m = (p + q) / 2
    return (rel_entr(p, m).sum(axis=1) + rel_entr(q, m).sum(axis=1)) / (2 * np.log(2))


def shifted_words(vocabulary: list[str], new: Any, ref: Any, k: int = 5) -> dict[str, list[str]]:
    """The k words most over- and most under-represented in `new` against `ref` (smoothed log ratio of their
    shares, words seen 5+ times, at least 1.5x apart), each as "word (count in new vs count in reference)"."""
    import numpy as np

    ratio = np.log((new + 0.5) / (new.sum() + 0.5)) - np.log((ref + 0.5) / (ref.sum() + 0.5))
    common = (new + ref) >= 5
    out = {}
    for key, sign in (("more_in_new", 1), ("less_in_new", -1)):
        score = np.where(common, sign * ratio, -np.inf)
        top = [int(i) for i in np.argsort(-score)[:k] if score[i] > np.log(1.5)]
        out[key] = [f"{vocabulary[i]} ({int(new[i])} vs {int(ref[i])})" for i in top]
    return out


def permutation_test(
    values: Any, n_ref: int, statistic: Callable[[Any, Any], Any], permutations: int, seed: int
) -> tuple[float, Any, float]:
    """`statistic(ref_sums, new_sums)` (vectorized over rows) on the pooled rows of `values` (the first n_ref are
    the reference's) as split, and on `permutations` random splits of the same sizes: (observed, null, p)."""
    import numpy as np

    n = values.shape[0]
    total = np.asarray(values.sum(axis=0), float).reshape(1, -1)
    ref_sum = np.asarray(values[:n_ref].sum(axis=0), float).reshape(1, -1)
    observed = float(statistic(ref_sum, total - ref_sum)[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // max(values.shape[1], n))  # permutations per step: ~32 MB of float64 sums
    null = []
    for start in range(0, permutations, chunk):
        size = min(chunk, permutations - start)
        picks = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)[:, :n_ref]
        masks = np.zeros((size, n))
        masks[np.arange(size)[:, None], picks] = 1.0
        sums = np.asarray((values.T @ masks.T).T, float)  # sparse.T @ dense: no dense copy of the counts
        null.append(statistic(sums, total - sums))
    null = np.concatenate(null)
    p = (1 + int(np.sum(null >= observed * (1 - 1e-9)))) / (permutations + 1)
    return observed, null, p


def _quantile(values: Any, q: float) -> float:
    import numpy as np

    return float(np.quantile(values, q))


def z_score(observed: float, null: Any) -> float:
    return float((observed - null.mean()) / max(float(null.std()), 1e-12))


def label_signal(name: str, ref: list[str], new: list[str]) -> Signal | None:
    """Chi-square test of the label shares (labels under 5 rows in both files together are pooled as "(rare)", as
    the test needs); None when fewer than two labels remain."""
    from scipy.stats import chi2_contingency

    pooled = Counter(ref + new)
    rare = {label for label, count in pooled.items() if count < 5}
    keep = sorted(set(pooled) - rare) + (["(rare)"] if rare else [])
    if len(keep) < 2:
        return None
    counted = [Counter("(rare)" if v in rare else v for v in side) for side in (ref, new)]
    table = [[c[label] for label in keep] for c in counted]
    test = chi2_contingency(table)
    shares = {label: [c[label] / len(side) for c, side in zip(counted, (ref, new), strict=True)] for label in keep}
    label, (a, b) = max(shares.items(), key=lambda item: abs(item[1][1] - item[1][0]))
    n = len(ref) + len(new)
    cramers_v = (test.statistic / (n * (len(keep) - 1))) ** 0.5 if n else 0.0
    summary = f"chi2={test.statistic:.1f}, Cramér's V {cramers_v:.2f}; largest shift {label!r} {a:.0%} → {b:.0%}"
    detail = {"shares": shares, "cramers_v": cramers_v, "dof": int(test.dof)}
    return Signal("labels", name, float(test.statistic), float(test.pvalue), summary, detail)


@dataclass(frozen=True)
class Verdict:
    drifted: bool
    line: str  # "drift detected: ..." or "no drift detected: ...", naming the strongest signal
    threshold: float  # the per-test level: alpha over the number of tests (Bonferroni)
    significant: list[str]  # the names of the signals below it


def decide(signals: list[Signal], alpha: float = 0.01) -> Verdict:
    """Drift when any test's p-value is below alpha / (number of tests): at most an `alpha` chance of calling two
    samples of one distribution different, whatever the number of fields (Bonferroni)."""
    if not signals:
        return Verdict(False, "no drift detected: the files have no field in common to compare", alpha, [])
    threshold = alpha / len(signals)
    # Ties at a permutation test's smallest p-value go to the signal furthest out of its random splits.
    ranked = sorted(signals, key=lambda s: (s.p_value, -s.detail.get("z", 0.0)))
    significant = [s.name for s in ranked if s.p_value < threshold]
    strongest = ranked[0]
    evidence = f"{strongest.name}, {strongest.summary} ({p_text(strongest)})"
    rule = f"α = {alpha:g}/{len(signals)} tests = {threshold:.2g}"
    if significant:
        line = f"drift detected: {evidence}; {len(significant)} of {len(signals)} tests below {rule}"
    else:
        line = f"no drift detected: strongest signal {evidence}, above {rule}"
    return Verdict(bool(significant), line, threshold, significant)


def p_text(signal: Signal, prefix: str = "p ") -> str:
    """ "p = 0.034", or "p ≤ 0.0005" when no random split of a permutation test came as far out."""
    permutations = signal.detail.get("permutations")
    if permutations and signal.p_value <= 1 / (permutations + 1):
        return f"{prefix}≤ {1 / (permutations + 1):.2g}"
    return f"{prefix}= {signal.p_value:.2g}" if prefix else f"{signal.p_value:.2g}"
