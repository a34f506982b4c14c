"""`tunelab drift` and eval's train/test check: not blind (other sources and shifted labels are caught, planted copies
found), not jumpy (random halves of one file pass, at a measured false-positive rate), and bad input in one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tests.helpers import run_cli, write_jsonl
from tunelab.data import contamination, drift
from tunelab.evaluation import drift as driftmod
from tunelab.evaluation import evaluate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TICKETS = EXAMPLES / "support_tickets" / "train.jsonl"
TICKETS_TEST = EXAMPLES / "support_tickets" / "test.jsonl"
LARKSPUR = EXAMPLES / "larkspur_docs" / "train.jsonl"


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def random_halves(path: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    rows = random.Random(seed).sample(rows_of(path), len(rows_of(path)))
    half = len(rows) // 2
    return write_jsonl(out / "half_a.jsonl", rows[:half]), write_jsonl(out / "half_b.jsonl", rows[half:])


def drift_cli(tmp_path: Path, ref: Path | str, new: Path, *options: str) -> dict:
    out = tmp_path / "drift"
    result = run_cli(["drift", str(ref), str(new), "--output-dir", str(out), *options])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "drift.json").read_text())
    assert report["verdict"] in result.output and report["contamination"] in result.output
    assert (out / "drift.png").read_bytes()[:4] == b"\x89PNG" and report["verdict"] in (out / "drift.md").read_text()
    return report


def test_random_halves_of_one_file_show_no_drift(tmp_path, tiny_encoder_dir):
    a, b = random_halves(TICKETS, tmp_path)
    report = drift_cli(tmp_path, a, b, "--encoder", str(tiny_encoder_dir))
    assert report["verdict"].startswith("no drift detected: strongest signal ") and not report["drift"]
    kinds = {s["kind"] for s in report["signals"]}
    assert kinds == {"lengths", "words", "labels", "embedding"}  # the tickets' JSON answers give label fields
    assert report["contamination"].startswith("no contamination")  # no prompt copied (13-word spans aside)


def test_two_different_sources_drift_on_every_kind_of_test(tmp_path, tiny_encoder_dir):
    report = drift_cli(tmp_path, TICKETS, LARKSPUR, "--encoder", str(tiny_encoder_dir))
    assert report["verdict"].startswith("drift detected: ") and report["drift"]
    significant = {s["name"] for s in report["signals"] if s["significant"]}
    # Each test alone sees it, the embedding test with a tiny random encoder too: none of them is blind.
    assert {"prompt lengths", "prompt words", "prompt embedding", "completion words"} <= significant
    embedding = next(s for s in report["signals"] if s["name"] == "prompt embedding")
    assert embedding["detail"]["classifier_auc"] > 0.9


def test_false_positive_rate_on_random_splits_stays_below_alpha():
    """40 random half-splits of the support tickets (train + test, 450 rows) with the lexical tests: the share called
    drifted must not exceed alpha. At alpha 0.1 (so that 199 permutations can reach the Bonferroni level) 2 of 40
    are (5%); a test that ignored the reference spread of random splits would call most of them drifted."""
    rows = [line for path in (TICKETS, TICKETS_TEST) for line in path.read_text().splitlines() if line.strip()]
    alpha, splits, called, p_values = 0.1, 40, 0, []
    for seed in range(splits):
        shuffled = random.Random(seed).sample(rows, len(rows))
        ref, new = (drift_sample(part, f"half{i}") for i, part in enumerate((shuffled[:225], shuffled[225:])))
        signals = drift.lexical_signals(ref, new, permutations=199, seed=seed)
        called += drift.decide(signals, alpha).drifted
        p_values += [s.p_value for s in signals]
    assert called <= alpha * splits
    assert sum(p < 0.05 for p in p_values) / len(p_values) <= 0.06  # each test at most at its nominal level
    ref, new = drift.read_pair(TICKETS, LARKSPUR)
    assert drift.decide(drift.lexical_signals(ref, new, permutations=199), alpha).drifted


def drift_sample(lines: list[str], name: str) -> drift.Sample:
    rows = [json.loads(line) for line in lines]
    texts = {f: [r[f] for r in rows] for f in ("prompt", "completion")}
    labels = drift.json_labels("completion", texts["completion"])
    return drift.Sample(name, "prompt_completion", texts, labels, [f"{name}:{i + 1}" for i in range(len(rows))])


def test_label_shift_alone_is_detected_and_named(tmp_path):
    texts = [r["text"] for r in rows_of(EXAMPLES / "support_tickets" / "categories_train.jsonl")]
    rng = random.Random(0)
    rng.shuffle(texts)
    ref = [{"text": t, "label": "urgent" if rng.random() < 0.5 else "routine"} for t in texts[:165]]
    new = [{"text": t, "label": "urgent" if rng.random() < 0.8 else "routine"} for t in texts[165:]]
    job = driftmod.prepare(
        str(write_jsonl(tmp_path / "ref.jsonl", ref)), write_jsonl(tmp_path / "new.jsonl", new), tmp_path / "out"
    )
    report = driftmod.run(job)
    assert report.verdict.drifted and report.verdict.significant == ["label shares"]
    assert report.verdict.line.startswith("drift detected: label shares, chi2=")
    shares = next(s for s in report.signals if s.kind == "labels").detail["shares"]
    assert shares["urgent"][1] - shares["urgent"][0] > 0.2
    assert "| urgent |" in (tmp_path / "out" / "drift.md").read_text()


def test_near_duplicates_of_training_rows_are_found(tmp_path):
    train, test = rows_of(TICKETS), rows_of(TICKETS_TEST)
    exact = dict(train[10], prompt=train[10]["prompt"].upper().replace(" ", "  "))  # case and spacing only
    edited = dict(train[20], prompt="Hello there, " + train[20]["prompt"].replace("the", "teh", 1))
    shortened = dict(train[30], prompt=" ".join(train[30]["prompt"].split()[:-2]))  # the sign-off cut
    new = write_jsonl(tmp_path / "test.jsonl", test + [exact, edited, shortened])
    overlap = contamination.near_duplicates(*drift.read_pair(TICKETS, new))
    copies = {m.new.rsplit(":", 1)[1]: (m.kind, m.reference.rsplit(":", 1)[1]) for m in overlap.matches}
    copies = {line: found for line, found in copies.items() if found[0] != "13-gram"}
    assert copies == {"121": ("exact", "11"), "122": ("near-duplicate", "21"), "123": ("near-duplicate", "31")}
    assert overlap.line().startswith("contamination: ") and "1 exact copy, 2 near-duplicates" in overlap.line()


def test_files_of_different_formats_are_one_line_before_any_model_loads(tmp_path):
    categories = EXAMPLES / "support_tickets" / "categories_test.jsonl"
    result = run_cli(["drift", str(TICKETS), str(categories), "--encoder", "no/such-encoder"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "prompt_completion rows" in lines[0] and "classification rows" in lines[0] and "convert one" in lines[0]
    few = run_cli(["drift", str(TICKETS), str(TICKETS_TEST), "--permutations", "99", "--output-dir", str(tmp_path)])
    assert few.exit_code == 2 and "use --permutations" in few.output and len(few.output.strip().splitlines()) == 1


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run as eval and drift read it: config.yaml (data.train: the tickets) and the COMPLETE marker."""
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {"name": "smollm2-135m-instruct"}, "data": {"train": str(TICKETS)}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "COMPLETE").write_text(json.dumps({"artifact": "adapter"}))
    return run


def test_eval_warns_when_the_test_set_copies_training_rows(run_dir, tmp_path, capsys):
    evaluate.prepare(str(run_dir), TICKETS_TEST, ["exact_match"], output_dir=tmp_path / "clean")
    assert "warning" not in capsys.readouterr().err  # the shipped test set neither copies nor drifts
    leaky = write_jsonl(tmp_path / "leaky.jsonl", rows_of(TICKETS_TEST)[:60] + rows_of(TICKETS)[:6])
    evaluate.prepare(str(run_dir), leaky, ["exact_match"], output_dir=tmp_path / "leaky")
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: 6 of 66 test rows copy a training row's prompt" in err and "tunelab drift" in err


def test_a_run_directory_as_reference_means_its_training_data(run_dir, tmp_path):
    report = drift_cli(tmp_path, run_dir, LARKSPUR, "--no-embedding", "--json")
    assert report["reference"] == str(run_dir) and report["reference_file"] == str(TICKETS)
    assert report["encoder"] is None and report["drift"]
