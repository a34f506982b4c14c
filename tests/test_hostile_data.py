"""Hostile data (issue 16): huge, deep, binary or broken rows are located bad rows, never crashes; file-level
problems name the line; many rows with one problem are listed once; val_size keeps copies of a row together."""

from __future__ import annotations

import csv
import json
import os
import random

import pytest

from tests.helpers import run_cli, write_config
from tests.test_data_helpers import make_cfg, qa_rows, write_lines, write_rows
from tunelab import data
from tunelab.data import readers
from tunelab.data.rows import split
from tunelab.errors import DataError

SMALL_LIMIT = 64 * 1024  # stands in for MAX_ROW_BYTES, so a "200 MB" row is 100 KB here
HUGE = "x" * 100_000
DEEP_LIST = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
NUL = r"contains a NUL byte (\x00): binary data or a broken export; remove it"
TOO_LARGE = "over the 65,536 bytes limit on one row"

HOSTILE_ROWS = [  # (case, file type, the bad row, kind, field, reason, smaller limit?)
    ("jsonl_deep_list", ".jsonl", DEEP_LIST, "unparseable", "", "nested too deeply to read", False),
    ("jsonl_deep_object", ".jsonl", DEEP_OBJECT, "unparseable", "", "nested too deeply to read", False),
    ("json_deep_list", ".json", DEEP_LIST, "unparseable", "", "nested too deeply to read", False),
    ("json_deep_object", ".json", DEEP_OBJECT, "unparseable", "", "nested too deeply to read", False),
    ("jsonl_huge_line", ".jsonl", {"prompt": HUGE, "completion": "c"}, "too_large", "",
     f"the line is 100,034 bytes, {TOO_LARGE}", True),
    ("csv_huge_line", ".csv", f"{HUGE},c".encode(), "too_large", "", f"line 3 is 100,003 bytes, {TOO_LARGE}", True),
    ("csv_huge_multiline_cell", ".csv", b'"' + (b"y" * 30_000 + b"\n") * 3 + b'",c', "too_large", "",
     f"a cell (lines 3-6) is {TOO_LARGE}", True),
    ("json_huge_row", ".json", {"prompt": HUGE, "completion": "c"}, "too_large", "", TOO_LARGE, True),
    ("parquet_huge_row", ".parquet", {"prompt": HUGE, "completion": "c"}, "too_large", "", TOO_LARGE, True),
    ("saved_huge_row", "", {"prompt": HUGE, "completion": "c"}, "too_large", "", TOO_LARGE, True),
    ("jsonl_not_utf8", ".jsonl", b'{"prompt": "caf\xe9", "completion": "c"}', "not_text", "",
     "not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8", False),
    ("jsonl_nul", ".jsonl", {"prompt": "a\x00b", "completion": "c"}, "not_text", "prompt", NUL, False),
    ("csv_nul", ".csv", b"a\x00b,c", "not_text", "prompt", NUL, False),
    ("json_nul", ".json", {"prompt": "p", "completion": "a\x00b"}, "not_text", "completion", NUL, False),
    ("parquet_nul", ".parquet", {"prompt": "a\x00b", "completion": "c"}, "not_text", "prompt", NUL, False),
]  # fmt: skip


def write_around(path, bad) -> list[str]:
    """A good row, the bad one, a good row; where each of the three is."""
    first, last = {"prompt": "p0", "completion": "c0"}, {"prompt": "p1", "completion": "c1"}
    if path.suffix in (".jsonl", ".csv"):
        head = b"prompt,completion\np0,c0\n" if path.suffix == ".csv" else json.dumps(first).encode() + b"\n"
        bad = json.dumps(bad).encode() if isinstance(bad, dict) else bad
        tail = b"p1,c1\n" if path.suffix == ".csv" else json.dumps(last).encode() + b"\n"
        path.write_bytes(head + bad + b"\n" + tail)
        line, bad_lines = head.count(b"\n") + 1, bad.count(b"\n") + 1
        return [f"{path}:{line - 1}", f"{path}:{line}", f"{path}:{line + bad_lines}"]
    if path.suffix == ".json" and isinstance(bad, bytes):  # too deep for json.dumps to write
        path.write_bytes(b"[" + json.dumps(first).encode() + b",\n" + bad + b",\n" + json.dumps(last).encode() + b"]")
    else:
        write_rows(path, [first, bad, last])
    return [f"{path}[0]", f"{path}[1]", f"{path}[2]"]


@pytest.mark.parametrize("case", HOSTILE_ROWS, ids=[c[0] for c in HOSTILE_ROWS])
def test_each_hostile_row_is_a_located_bad_row_that_skip_drops(tmp_path, monkeypatch, case):
    _, suffix, bad, kind, field, reason, small = case
    if small:
        monkeypatch.setattr(readers, "MAX_ROW_BYTES", SMALL_LIMIT)
    path = tmp_path / f"t{suffix}"
    first, where, last = write_around(path, bad)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path))
    [problem] = exc.value.problems
    prefix = f"{where}: field '{field}': " if field else f"{where}: "
    assert problem.startswith(prefix) and reason in problem, problem
    assert "; " in problem.removeprefix(prefix)  # a fix follows the reason
    rows = data.preflight(make_cfg(path, on_bad_rows="skip", max_skip_fraction=0.5))
    assert rows.skipped == {kind: 1} and rows.rows_read == 3
    # the reader went on after the bad row, at the right line
    assert [(r.where, r.messages[1]["content"]) for r in rows.train] == [(first, "c0"), (last, "c1")]


def test_the_row_limit_is_8_mib_and_counts_the_line_without_its_ending(tmp_path, monkeypatch):
    assert readers.MAX_ROW_BYTES == 8 * 1024 * 1024
    monkeypatch.setattr(readers, "MAX_ROW_BYTES", 1000)
    fits = json.dumps({"prompt": "", "completion": "c"})
    fits = fits.replace('""', '"' + "x" * (1000 - len(fits)) + '"')
    over = fits.replace('"c"}', '"cc"}')
    path = write_lines(tmp_path / "t.jsonl", [fits, over])
    assert len(fits) == 1000
    records = readers.read(path)
    assert records[0].fields is not None and (records[1].kind, records[1].line) == ("too_large", 2)


def test_a_csv_cell_over_the_csv_modules_128_kib_default_is_a_good_row(tmp_path):
    big = "w " * 100_000  # 200 KB: over csv's own field limit, far under MAX_ROW_BYTES
    path = write_rows(tmp_path / "t.csv", [{"prompt": big, "completion": "c"}, {"prompt": "p", "completion": "d"}])
    before = csv.field_size_limit()
    rows = data.preflight(make_cfg(path))
    assert [r.messages[0]["content"] for r in rows.train] == [big, "p"]
    assert csv.field_size_limit() == before  # the process-wide limit is put back


def test_a_bom_is_still_allowed(tmp_path):
    for name in ("t.jsonl", "t.json", "t.csv"):
        path = write_rows(tmp_path / name, qa_rows(2))
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        assert len(data.preflight(make_cfg(path)).train) == 2


def _symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.jsonl", tmp_path / "a.jsonl")
    os.symlink(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    return tmp_path / "a.jsonl"


def _unclosed_quote(tmp_path):
    return write_lines(tmp_path / "t.csv", ["prompt,completion", "p,c", '"' + "y" * 40_000, "y" * 40_000, "more"])


UNREADABLE = [  # (case, make the file, what the one problem line says)
    ("csv_not_utf8", lambda p: _bytes(p / "t.csv", b"prompt,completion\np,c\nq,caf\xe9\n"),
     "t.csv:3: not UTF-8 text (byte 0xe9 at column 6); save the file as UTF-8"),
    ("json_not_utf8", lambda p: _bytes(p / "t.json", b'[{"prompt": "p", "completion": "c"},\n {"prompt": "caf\xe9"}]'),
     "t.json:2: not UTF-8 text (byte 0xe9 at column 17); save the file as UTF-8"),
    ("jsonl_only_row_not_utf8", lambda p: _bytes(p / "t.jsonl", b'\n{"prompt": "\xff"}\n'),
     "t.jsonl:2: not UTF-8 text (byte 0xff at column 13); save the file as UTF-8"),
    ("symlink_loop", _symlink_loop,
     "a.jsonl: a symbolic link that leads back to itself (ELOOP); point at the real file"),
    ("csv_quote_never_closes_after_huge_cell", _unclosed_quote,
     "t.csv:3: a quoted cell opened in this row never closes; close it or remove the row"),
    ("dir_not_a_dataset", lambda p: (p / "d").mkdir() or p / "d",
     "point at a file, or at a directory written by Dataset.save_to_disk"),
]  # fmt: skip


def _bytes(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
def test_unreadable_files_name_the_line_and_the_cause(tmp_path, monkeypatch, make, expected):
    monkeypatch.setattr(readers, "MAX_ROW_BYTES", SMALL_LIMIT)
    path = make(tmp_path)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path))
    [problem] = exc.value.problems
    assert problem.startswith(str(tmp_path)) and problem.endswith(expected), problem
    assert "no such file" not in str(exc.value)


@pytest.mark.parametrize(
    ("good", "mode", "head", "hint"),
    [(0, "error", "every row is bad (300 read)", False), (0, "skip", "every row is bad (300 read)", False),
     (1, "error", "299 bad row(s) in the data", True)],
)  # fmt: skip
def test_many_rows_with_one_problem_are_listed_once_with_a_count(tmp_path, good, mode, head, hint):
    rows = qa_rows(good) + [{"prompt": f"p{i}"} for i in range(300 - good)]
    path = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path, format="prompt_completion", on_bad_rows=mode, max_skip_fraction=1.0))
    first = good + 1
    assert exc.value.problems == [
        f"{path}:{first} (and {299 - good} more rows): field 'completion': is missing; "
        "add 'completion' with a non-empty string"
    ]
    assert str(exc.value).startswith(head)
    assert ("on_bad_rows=skip" in str(exc.value)) == hint and "max_skip_fraction" not in str(exc.value)


def test_rows_with_different_problems_are_still_listed_apart(tmp_path):
    rows = [*qa_rows(1), {"prompt": "a"}, {"prompt": "b"}, {"prompt": 1, "completion": "c"}]
    path = write_rows(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path))
    assert [p.split(": field")[0] for p in exc.value.problems] == [f"{path}:2 (and 1 more row)", f"{path}:4"]


@pytest.mark.parametrize(("seed", "val_size"), [(42, 0.25), (7, 0.1), (0, 3), (123, 0.5)])
def test_split_without_repeats_holds_out_exactly_the_rows_it_always_has(tmp_path, seed, val_size):
    """The demo's published figures depend on these rows: the formula before repeats were grouped."""
    lines = [json.dumps(r) for r in qa_rows(40)]
    lines[11] = "{not json"  # a bad row is a group of its own: it changes nothing either
    path = write_lines(tmp_path / "t.jsonl", lines)
    rows = data.preflight(make_cfg(path, seed=seed, val_size=val_size, on_bad_rows="skip", max_skip_fraction=0.1))
    n = 40
    n_val = int(val_size) if val_size >= 1 else max(1, round(val_size * n))
    held = set(random.Random(seed).sample(range(n), n_val))  # the old split, verbatim
    assert [r.line for r in rows.validation] == [i + 1 for i in sorted(held) if i != 11]
    assert [r.line for r in rows.train] == [i + 1 for i in range(n) if i not in held and i != 11]
    assert rows.repeats == 0


def test_copies_of_a_row_stay_on_one_side_of_the_split(tmp_path, capsys):
    rows = qa_rows(20)
    copy = {"prompt": "  Question  number 5?", "completion": "Answer 5.\n"}  # the same after whitespace
    path = write_rows(tmp_path / "t.jsonl", [*rows[:12], copy, *rows[12:], rows[5]])
    copies = {6, 13, 22}
    would_have_split = 0
    for seed in range(30):
        got = data.preflight(make_cfg(path, seed=seed, val_size=0.25))  # no leak refused
        val = {r.line for r in got.validation}
        assert got.repeats == 2 and (copies <= val or not copies & val), seed
        # split() alone (as evaluation re-derives the training labels) holds out the same rows
        assert [r.line for r in split(readers.read(path), 0.25, seed)[1]] == sorted(val)
        old = {i + 1 for i in random.Random(seed).sample(range(22), round(0.25 * 22))}
        would_have_split += 0 < len(copies & old) < 3
    assert would_have_split  # the old split did separate them for some of these seeds
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "2 row(s) repeat an earlier row; each kept on the same side of the split" in said


def test_rows_given_in_both_train_and_a_validation_file_are_still_duplicates(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", qa_rows(3))
    val = write_rows(tmp_path / "val.jsonl", [qa_rows(3)[1], {"prompt": "new", "completion": "x"}])
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(train, validation=str(val)))
    [problem] = exc.value.problems
    assert problem.startswith(f"{val}:1: the same row is in the training data at {train}:2")


def test_inspect_data_counts_hostile_rows_and_repeats(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal, so rich does not wrap the table's cells
    monkeypatch.setattr(readers, "MAX_ROW_BYTES", SMALL_LIMIT)
    good = [json.dumps(r).encode() for r in qa_rows(12)]
    nul, huge = ({"prompt": text, "completion": "c"} for text in ("\x00", HUGE))
    deep = b"[" * 20_000 + b"]" * 20_000  # under the (small) row limit, far over the JSON parser's depth
    latin1 = b'{"prompt": "caf\xe9", "completion": "c"}'
    hostile = [deep, latin1, json.dumps(nul).encode(), json.dumps(huge).encode()]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([*good, *hostile, good[3]]) + b"\n")  # and a repeat of row 4
    cfg = write_config(tmp_path, tiny_model_dir, data={"train": str(path), "val_size": 0.25})
    result = run_cli(["inspect-data", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "unparseable 1, not_text 2, too_large 1" in result.output, result.output
    assert "repeated rows" in result.output and "1 (each kept with its copies" in result.output


@pytest.mark.parametrize("case", ["csv_not_utf8", "symlink_loop"])
def test_the_cli_names_the_cause_without_a_traceback(tmp_path, tiny_model_dir, case):
    make, expected = next(c[1:] for c in UNREADABLE if c[0] == case)
    path = make(tmp_path)
    result = run_cli(["inspect-data", str(write_config(tmp_path, tiny_model_dir, data={"train": str(path)}))])
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output, result.output
