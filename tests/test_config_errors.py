"""Config files that PyYAML or the filesystem get wrong become one clean line each: file:line, what, and the fix.

.venv/bin/python -m pytest -p no:xdist -q tests/test_config_errors.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tunelab import config
from tunelab.errors import ConfigError

DATA = "data:\n  train: a.jsonl\n"

# Nested aliases, each level ten of the one before: 10^7 values from eight lines ("billion laughs", scaled down).
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n" for prev, name in zip("abcdef", "bcdefg", strict=True)
)

# (id, YAML text, overrides, expected line; {cfg} is the config's path)
YAML_CASES = [
    (
        "duplicate section",
        DATA + "train:\n  output_dir: runs/a\n  max_steps: 5\nmethod: lora\ntrain:\n  learning_rate: 0.1\n",
        [],
        "{cfg}:7: duplicate key `train` (first at line 3); merge the two into one",
    ),
    (
        "duplicate nested key",
        DATA + "train:\n  learning_rate: 0.1\n  max_steps: 5\n  learning_rate: 0.2\n",
        [],
        "{cfg}:6: duplicate key `train.learning_rate` (first at line 4); merge the two into one",
    ),
    (
        "duplicate key in a flow mapping",
        "data: {train: a.jsonl, train: b.jsonl}\n",
        [],
        "{cfg}:1: duplicate key `data.train` (first at line 1)",
    ),
    (
        "alias inside its own sequence",
        DATA + "eval:\n  metrics: &x [*x]\n",
        [],
        "{cfg}:4: alias `*x` is inside the node it names, so it never ends; write the values out",
    ),
    (
        "mapping that contains itself",
        DATA + "train: &t\n  max_steps: 5\n  again: *t\n",
        [],
        "{cfg}:5: alias `*t` is inside the node it names",
    ),
    (
        "merge key that merges itself",
        DATA + "train: &t\n  <<: *t\n",
        [],
        "{cfg}:4: alias `*t` is inside the node it names",
    ),
    (
        "billion laughs",
        DATA + LAUGHS,
        [],
        "{cfg}:7: aliases here expand to over 100,000 values; write the config out without them",
    ),
    (
        "override with a bad value names the override",
        DATA + "train:\n  learning_rate: 0.1\n",
        ["train.learning_rate=abc"],
        "override train.learning_rate=abc: `train.learning_rate`: Input should be a valid number",
    ),
    (
        "override of a whole section names the override",
        DATA + "train:\n  max_steps: 5\n",
        ["train={max_steps: 5, learning_rat: 1}"],
        "override train={max_steps: 5, learning_rat: 1}: unknown key `train.learning_rat`",
    ),
    (
        "unknown method from an override names the override",
        DATA + "method:\n  name: lora\n",
        ["method.name=bogus"],
        "override method.name=bogus: `method.name`: unknown method",
    ),
    (
        "a key the file set keeps its line beside an override",
        DATA + "train:\n  max_steps: lots\n",
        ["train.learning_rate=0.1"],
        "{cfg}:4: `train.max_steps`: Input should be a valid integer",
    ),
    (
        "control character",
        DATA + "model: tiny\x00\n",
        [],
        "{cfg}:3: unacceptable character #x0000",
    ),
    (
        "nested thousands deep",
        DATA + "eval:\n  metrics: " + "[" * 5000 + "]" * 5000 + "\n",
        [],
        "nested too deeply to read; flatten it",
    ),
]


@pytest.mark.parametrize(
    ("text", "overrides", "expected"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES]
)
def test_a_bad_config_is_one_clean_line(tmp_path, text, overrides, expected):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.load(cfg, overrides)
    assert expected.replace("{cfg}", str(cfg)) in str(exc.value)
    assert "Traceback" not in str(exc.value)


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    return tmp_path / "configs"


def _symlink_loop(tmp_path: Path) -> Path:
    os.symlink(tmp_path / "b.yaml", tmp_path / "a.yaml")
    os.symlink(tmp_path / "a.yaml", tmp_path / "b.yaml")
    return tmp_path / "a.yaml"


def _dangling_link(tmp_path: Path) -> Path:
    (tmp_path / "link.yaml").symlink_to(tmp_path / "gone.yaml")
    return tmp_path / "link.yaml"


def _latin1(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"data:\n  train: a.jsonl\nmodel: caf\xe9\n")
    return path


# (id, builds the path in tmp_path, expected line; {cfg} is the path)
FILE_CASES = [
    ("missing", lambda tmp: tmp / "nope.yaml", "{cfg}: no such file; check the path"),
    ("dangling link", _dangling_link, "{cfg}: no such file; check the path"),
    ("directory", _directory, "{cfg}: is a directory; give the YAML file (e.g. configs/lora.yaml)"),
    ("symlink loop", _symlink_loop, "{cfg}: is a symlink loop"),
    ("not UTF-8", _latin1, "{cfg}:3: not UTF-8 text (byte 0xe9); save it as UTF-8"),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_a_config_path_that_cannot_be_read_says_why(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert expected.replace("{cfg}", str(path)) in str(exc.value)


FOLDER_RULE = "is the folder that holds this config (or one above it); a run needs a folder of its own"

# (id, output_dir line, overrides, expected start of the line)
OUTPUT_DIR_CASES = [
    ("the config's folder", "  output_dir: .\n", [], "{cfg}:4: train.output_dir=. " + FOLDER_RULE),
    ("the folder above", "  output_dir: ..\n", [], "{cfg}:4: train.output_dir=.. " + FOLDER_RULE),
    ("the folder, absolute", "  output_dir: {dir}\n", [], "{cfg}:4: train.output_dir={dir} " + FOLDER_RULE),
    ("the root", "  output_dir: /\n", [], "{cfg}:4: train.output_dir=/ " + FOLDER_RULE),
    ("set by an override", "  max_steps: 5\n", ["train.output_dir=.."], "override train.output_dir=..: "),
]


@pytest.mark.parametrize(
    ("line", "overrides", "expected"), [c[1:] for c in OUTPUT_DIR_CASES], ids=[c[0] for c in OUTPUT_DIR_CASES]
)
def test_output_dir_may_not_hold_the_config(tmp_path, monkeypatch, line, overrides, expected):
    monkeypatch.chdir(tmp_path)  # relative output_dirs resolve against the current directory, as training does
    cfg = tmp_path / "config.yaml"
    cfg.write_text(DATA + "train:\n" + line.format(dir=tmp_path))
    with pytest.raises(ConfigError) as exc:
        config.load(cfg, overrides)
    assert expected.replace("{cfg}", str(cfg)).replace("{dir}", str(tmp_path)) in str(exc.value)
    assert "e.g. train.output_dir=runs/NAME" in str(exc.value)


def test_output_dir_beside_or_below_the_config_is_fine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(DATA + "train:\n  output_dir: runs/a\n")
    assert config.load(cfg).train.output_dir == Path("runs/a")
    assert config.load(cfg, ["train.output_dir=../elsewhere"]).train.output_dir == Path("../elsewhere")


def test_a_runs_own_saved_config_may_name_its_run_folder(tmp_path, monkeypatch):
    # artifacts.start writes config.yaml and versions.json; resuming reads that config back.
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "versions.json").write_text("{}")
    (run / "config.yaml").write_text(DATA + "train:\n  output_dir: runs/a\n")
    assert config.load(run / "config.yaml").train.output_dir == Path("runs/a")
    (run / "config.yaml").write_text(DATA + "train:\n  output_dir: runs\n")  # the folder above is still refused
    with pytest.raises(ConfigError, match=re.escape(FOLDER_RULE)):
        config.load(run / "config.yaml")


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "data:\n  train: &file a.jsonl\n  validation: *file\n"
        "train: &base\n  max_steps: 5\n  learning_rate: 0.1\n"
        "  output_dir: runs/a\n"
        "eval:\n  metrics: &m [exact_match]\n"
        "forgetting:\n  max_items: 4\n"
    )
    loaded = config.load(cfg)
    assert loaded.data.validation == loaded.data.train and loaded.eval.metrics == ["exact_match"]
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        DATA + "method: &lora\n  name: lora\n  r: 4\n"
        "train:\n  <<: [{max_steps: 5, learning_rate: 0.1}, {max_steps: 9}]\n  max_steps: 7\n  output_dir: runs/a\n"
    )
    loaded = config.load(merged)
    assert loaded.train.max_steps == 7 and loaded.train.learning_rate == 0.1 and loaded.method.r == 4


def test_a_problem_in_a_merged_key_keeps_a_line(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(DATA + "train:\n  <<: {max_steps: lots}\n  output_dir: runs/a\n")
    with pytest.raises(ConfigError, match=r"config.yaml:4: `train.max_steps`: Input should be a valid integer"):
        config.load(cfg)


@pytest.mark.parametrize("command", ["plan", "inspect-data"])
def test_the_cli_prints_a_duplicate_key_without_a_traceback(tmp_path, command):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(DATA + "train:\n  max_steps: 5\ntrain:\n  output_dir: runs/a\n")
    result = run_cli([command, str(cfg)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "config.yaml:5: duplicate key `train` (first at line 3); merge the two into one" in result.output


def test_the_cli_names_the_override_and_refuses_an_output_dir_above_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(DATA + "train:\n  output_dir: runs/a\n")
    result = run_cli(["plan", str(cfg), "train.output_dir=.."])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "override train.output_dir=..: train.output_dir=.. is the folder that holds this config" in result.output
    result = run_cli(["plan", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a directory; give the YAML file" in result.output
