"""`tunelab drift REFERENCE NEW`: has the data moved? Lengths, words, labels and meaning, with one verdict line.

    job = prepare("runs/demo", Path("new.jsonl"), Path("runs/drift"))  # both files read, formats checked, no model
    report = run(job)  # every test, the verdict, contamination; drift.md, drift.json, drift.png in job.output_dir

REFERENCE is a data file or a run directory (its training data: config.yaml data.train, the whole file). On top
of the statistics of tunelab.data.drift, the meaning of each text field is compared with the built-in sentence
encoder: a permutation test on the distance between the two files' mean embeddings, and a classifier two-sample
test (logistic regression, 5-fold) whose AUC says how well the rows can be told apart (0.5: not at all).
`tunelab eval` runs the lexical tests and the contamination check on a run's test set (check_against_training).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunelab import artifacts
from tunelab.data.contamination import Overlap, near_duplicates
from tunelab.data.drift import (
    PERMUTATIONS,
    Sample,
    Signal,
    Verdict,
    decide,
    label_signal,
    lexical_signals,
    p_text,
    permutation_test,
    read_pair,
    z_score,
)
from tunelab.errors import ConfigError, DataError

OUTPUT_FILES = ("drift.md", "drift.json", "drift.png")
# Rows embedded per file (a seeded sample above it): the built-in encoder embeds ~30 short tickets a second on
# 2 busy CPU cores (EPYC Zen 4), so 2000 rows of two fields is about 2 minutes there.
MAX_EMBEDDED = 2000


@dataclass(frozen=True)
class DriftJob:
    """A drift check with both files read and checked, and the output free to write: no model loaded yet."""

    reference: str  # as given: a file or a run directory
    ref: Sample
    new: Sample
    output_dir: Path
    encoder: str | None  # None: lexical tests only
    alpha: float = 0.01
    permutations: int = PERMUTATIONS
    seed: int = 0
    trust_remote_code: bool = False


@dataclass
class DriftReport:
    reference: str
    ref: Sample
    new: Sample
    signals: list[Signal]
    verdict: Verdict
    overlap: Overlap
    encoder: str | None
    alpha: float
    permutations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.line,
            "drift": self.verdict.drifted,
            "contamination": self.overlap.line(),
            "reference": self.reference,
            "reference_file": self.ref.path,
            "new_file": self.new.path,
            "format": self.ref.format,
            "rows": [len(self.ref), len(self.new)],
            "rows_skipped": [self.ref.skipped, self.new.skipped],
            "alpha": self.alpha,
            "per_test_threshold": self.verdict.threshold,
            "permutations": self.permutations,
            "encoder": self.encoder,
            "signals": [s.to_dict() | {"significant": s.name in self.verdict.significant} for s in self.signals],
            "overlap": self.overlap.to_dict(),
            "seconds": self.seconds,
        }


def prepare(
    reference: str,
    new: Path,
    output_dir: Path,
    overwrite: bool = False,
    encoder: str | None = None,
    alpha: float = 0.01,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> DriftJob:
    """Every check that needs no model: the reference's file, both files' rows and format, the settings, the output."""
    ref, other = read_pair(reference_file(reference), new)
    tests = planned_tests(ref, other, encoder is not None)
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha {alpha:g}: give a significance level between 0 and 1, e.g. 0.01")
    if tests and 1 / (permutations + 1) >= alpha / tests:
        needed = math.ceil(2 * tests / alpha)
        raise ConfigError(
            f"--permutations {permutations}: the smallest p-value they can give, 1/{permutations + 1}, is above the "
            f"per-test level {alpha:g}/{tests} tests = {alpha / tests:.2g}; use --permutations {needed} or more"
        )
    artifacts.check_outputs([output_dir / name for name in OUTPUT_FILES], overwrite, "--output-dir")
    return DriftJob(reference, ref, other, output_dir, encoder, alpha, permutations, seed, trust_remote_code)


def reference_file(reference: str) -> Path:
    """A data file as it is; a run directory's training data (config.yaml data.train)."""
    if not artifacts.looks_like_run(reference):
        return Path(reference)
    config = Path(reference) / "config.yaml"
    train = ((yaml.safe_load(config.read_text()) or {}).get("data") or {}).get("train")
    if not train:
        raise ConfigError(f"{config}: no data.train; pass the training data file itself as REFERENCE")
    if isinstance(train, list):  # several tasks: each source is a file of its own format
        files = ", ".join(str(source.get("path")) for source in train)
        raise ConfigError(f"{reference} trained on several tasks ({files}); pass the one to compare as REFERENCE")
    if not Path(train).exists():
        raise DataError(
            f"{reference}: its training data {train} (config.yaml data.train) is not here; run from the folder it "
            "trained in, or pass the training data file itself as REFERENCE"
        )
    return Path(train)


def planned_tests(ref: Sample, new: Sample, embedding: bool) -> int:
    """How many tests run: two per text field in common (three with embeddings), one per usable label field."""
    fields = sum(name in new.texts for name in ref.texts)
    labels = sum(
        label_signal(name, ref.labels[name], new.labels[name]) is not None for name in ref.labels if name in new.labels
    )
    return fields * (3 if embedding else 2) + labels


def run(job: DriftJob) -> DriftReport:
    """All tests, the verdict and the contamination check; drift.md/.json/.png written to job.output_dir."""
    started = time.perf_counter()
    signals = lexical_signals(job.ref, job.new, job.permutations, job.seed)
    if job.encoder is not None:
        signals += embedding_signals(job, load_encoder_for(job))
    verdict = decide(signals, job.alpha)
    overlap = near_duplicates(job.ref, job.new)
    seconds = time.perf_counter() - started
    report = DriftReport(
        job.reference, job.ref, job.new, signals, verdict, overlap, job.encoder, job.alpha, job.permutations, seconds
    )
    write(report, job.output_dir)
    return report


def load_encoder_for(job: DriftJob) -> Any:
    from tunelab.rag.encoder import load_encoder

    return load_encoder(job.encoder, trust_remote_code=job.trust_remote_code)


def embedding_signals(job: DriftJob, encoder: Any) -> list[Signal]:
    """One embedding test per text field both files have (at most MAX_EMBEDDED rows of each)."""
    ref, new = job.ref.subsample(MAX_EMBEDDED, job.seed), job.new.subsample(MAX_EMBEDDED, job.seed)
    signals = []
    for name in [n for n in ref.texts if n in new.texts]:
        vectors = encoder.encode(ref.texts[name] + new.texts[name])
        signals.append(embedding_signal(name, vectors, len(ref), job.permutations, job.seed))
    return signals


def embedding_signal(name: str, vectors: Any, n_ref: int, permutations: int, seed: int) -> Signal:
    """Squared distance between the mean embeddings (a linear-kernel MMD) against random re-splits, and the AUC of
    a classifier telling the two files' rows apart."""
    n_new = len(vectors) - n_ref

    def distance(ref_sums: Any, new_sums: Any) -> Any:
        return ((ref_sums / n_ref - new_sums / n_new) ** 2).sum(axis=1)

    observed, null, p = permutation_test(vectors, n_ref, distance, permutations, seed)
    auc = classifier_auc(vectors, n_ref, seed)
    detail = {
        "random_splits_mean": float(null.mean()),
        "z": z_score(observed, null),
        "permutations": permutations,
        "classifier_auc": auc,
    }
    told = f", classifier AUC {auc:.2f}" if auc is not None else ""
    summary = f"mean-embedding distance {observed:.4f} vs {null.mean():.4f} on random splits{told}"
    return Signal("embedding", name, observed, p, summary, detail)


def classifier_auc(vectors: Any, n_ref: int, seed: int) -> float | None:
    """Out-of-fold ROC AUC of logistic regression telling new rows from reference rows (None under 5 rows a side)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.r_[np.zeros(n_ref), np.ones(len(vectors) - n_ref)]
    if min(n_ref, len(vectors) - n_ref) < 5:
        return None
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), vectors, labels, cv=folds, method="predict_proba")
    return float(roc_auc_score(labels, scores[:, 1]))


def check_against_training(train: Path, test: Path, alpha: float = 0.01) -> list[str]:
    """What `tunelab eval` warns about a run's test set: rows copying training rows, and drift by the lexical
    tests (no model: 1.3 s on the demo's 330 training and 120 test rows, 0.4 s once scipy and datasketch are
    imported; 2 busy EPYC Zen 4 cores). Nothing when the files cannot be compared (another format, e.g. a
    preference run's pairs)."""
    try:
        ref, new = read_pair(train, test)
    except DataError:
        return []
    warnings = []
    overlap = near_duplicates(ref, new)
    if overlap.copies:
        first, copied = overlap.copies[0], len(overlap.copies)
        warnings.append(
            f"{copied} of {overlap.rows} test rows copy a training row's {overlap.field} (e.g. {first.new} ≈ "
            f"{first.reference}, Jaccard {first.similarity:.2f}): scores on them measure memory, not skill; "
            f"`tunelab drift {train} {test}` lists them"
        )
    verdict = decide(lexical_signals(ref, new), alpha)
    if verdict.drifted:
        warnings.append(
            f"the test set drifts from the training data ({verdict.line.removeprefix('drift detected: ')}): "
            f"scores may not carry over; `tunelab drift {train} {test}` for the full report"
        )
    return warnings


def markdown(report: DriftReport) -> str:
    ref, new = report.ref, report.new
    lines = [
        f"# Drift: {new.path} against {report.reference}",
        "",
        f"**{report.verdict.line}**",
        "",
        f"**{report.overlap.line()}**",
        "",
        f"{ref.format} rows: {len(ref)} reference ({ref.path}), {len(new)} new"
        + (
            f"; rows skipped (bad or without text): {ref.skipped} and {new.skipped}"
            if ref.skipped or new.skipped
            else ""
        )
        + f". Significance: α = {report.alpha:g}, Bonferroni over {len(report.signals)} tests "
        f"(each at p < {report.verdict.threshold:.2g}); permutation tests: {report.permutations} random re-splits"
        + (f"; encoder: {report.encoder}." if report.encoder else "; no embedding test (--no-embedding)."),
        "",
        "| test | field | result | p-value | below threshold |",
        "|---|---|---|---:|:---:|",
    ]
    for s in report.signals:
        mark = "yes" if s.name in report.verdict.significant else ""
        lines.append(f"| {s.kind} | {s.field} | {s.summary} | {p_text(s, prefix='')} | {mark} |")
    lines += words_section(report.signals) + labels_section(report.signals) + matches_section(report.overlap)
    return "\n".join(lines) + "\n"


def words_section(signals: list[Signal]) -> list[str]:
    lines = []
    for s in (s for s in signals if s.kind == "words" and (s.detail["more_in_new"] or s.detail["less_in_new"])):
        lines += ["", f"## Words of {s.field} (count in new vs reference)", ""]
        lines.append(f"- more frequent in new: {', '.join(s.detail['more_in_new']) or '-'}")
        lines.append(f"- less frequent in new: {', '.join(s.detail['less_in_new']) or '-'}")
    return lines


def labels_section(signals: list[Signal]) -> list[str]:
    lines = []
    for s in (s for s in signals if s.kind == "labels"):
        lines += ["", f"## {s.field}: shares of rows", "", "| label | reference | new |", "|---|---:|---:|"]
        lines += [f"| {label} | {a:.1%} | {b:.1%} |" for label, (a, b) in s.detail["shares"].items()]
    return lines


def matches_section(overlap: Overlap, shown: int = 20) -> list[str]:
    if not overlap.matches:
        return []
    lines = ["", f"## New rows overlapping the reference ({overlap.field}; first {shown})", ""]
    lines += ["| new row | reference row | kind | Jaccard | text |", "|---|---|---|---:|---|"]
    for m in overlap.matches[:shown]:
        text = m.text.replace("|", "\\|")
        lines.append(f"| {m.new} | {m.reference} | {m.kind} | {m.similarity:.2f} | {text} |")
    return lines


def plot(report: DriftReport, path: Path) -> None:
    """Length histograms of each text field (reference vs new), and each test's -log10 p against the threshold."""
    import numpy as np

    plt = artifacts.pyplot()

    names = [n for n in report.ref.texts if n in report.new.texts][:3]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.6 * (len(names) + 1) + 1.5, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        lengths = [[len(t.split()) for t in sample.texts[name]] for sample in (report.ref, report.new)]
        bins = np.histogram_bin_edges(np.concatenate(lengths), bins=30)
        for values, label in zip(lengths, ("reference", "new"), strict=True):
            ax.hist(values, bins=bins, density=True, alpha=0.55, label=label)
        ax.set_title(f"{name}: words per row")
        ax.legend()
    ax = axes[0][-1]
    strengths = [-math.log10(max(s.p_value, 1e-300)) for s in report.signals]
    colors = ["#c44e52" if s.name in report.verdict.significant else "#4c72b0" for s in report.signals]
    ax.barh([s.name for s in report.signals], strengths, color=colors)
    ax.axvline(-math.log10(report.verdict.threshold), color="black", linestyle="--", label="Bonferroni threshold")
    ax.set_xscale("symlog")
    ax.set_xlabel("-log10 p")
    ax.legend(fontsize=8)
    fig.suptitle(report.verdict.line.split(":")[0])
    fig.tight_layout()
    artifacts.write_figure(fig, path)


def default_output_dir(reference: str) -> Path:
    """A run's drift report goes in the run (RUN/drift, beside eval/ and compare/); two files': runs/drift."""
    return Path(reference) / "drift" if artifacts.looks_like_run(reference) else Path("runs/drift")


def write(report: DriftReport, out_dir: Path) -> None:
    """drift.md, drift.json and drift.png, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_text(out_dir / "drift.md", markdown(report))
    artifacts.write_json(out_dir / "drift.json", report.to_dict())
    plot(report, out_dir / "drift.png")


def to_json(report: DriftReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
