"""Nothing lost, nothing run unasked: run-dir and output rules, a run's saved trust_remote_code, and the checks
that must come before any weights load. Every case goes through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import memorizable_rows, run_cli, write_config, write_jsonl

MISSING_MODEL = "no-such-owner/no-such-model"  # loading it would fail: an error naming anything else came first


def train(tmp_path: Path, model_dir: Path, *overrides: str) -> Path:
    cfg = write_config(tmp_path, model_dir, train={"max_steps": 1}, model={"name": str(model_dir)})
    result = run_cli(["train", str(cfg), "forgetting.enabled=false", *overrides])
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir) -> Path:
    return train(tmp_path_factory.mktemp("safety_run"), tiny_model_dir)


# --- the run directory ---------------------------------------------------------------------------------------


def test_overwrite_removes_only_tunelabs_files_and_refuses_a_folder_with_others(tmp_path, tiny_model_dir):
    run = train(tmp_path, tiny_model_dir)
    (run / "eval").mkdir()
    (run / "eval" / "report.md").write_text("an earlier evaluation")
    (run / ".metrics.json.tmp-123").write_text("left by a crash")
    rerun = train(tmp_path, tiny_model_dir, "train.overwrite_output_dir=true", "train.seed=7")
    assert (rerun / "COMPLETE").is_file() and not (rerun / "eval").exists()
    assert yaml.safe_load((rerun / "config.yaml").read_text())["train"]["seed"] == 7

    (rerun / "notes.txt").write_text("my notes")
    (rerun / "src").mkdir()
    cfg = tmp_path / "config.yaml"
    refused = run_cli(["train", str(cfg), "forgetting.enabled=false", "train.overwrite_output_dir=true"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "files tunelab did not write (notes.txt, src/)" in refused.output
    assert (rerun / "notes.txt").read_text() == "my notes" and (rerun / "COMPLETE").is_file()


@pytest.mark.parametrize(
    ("output_dir", "expected"),
    [
        (".", "is the current folder (or one above it)"),
        ("..", "holds this config (or one above it)"),
        ("/", "holds this config (or one above it)"),
        ("'~'", "a path starting with ~"),  # quoted: a bare ~ is YAML's null
        ("~/runs/x", "a path starting with ~"),
        ("notes", "holds files tunelab did not write (todo.txt)"),
        ("a_file", "is a file, not a folder"),
    ],
)
def test_a_folder_that_is_not_a_run_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch, output_dir, expected):
    project, configs = tmp_path / "project", tmp_path / "configs"  # the config beside the project, not in it
    configs.mkdir()
    (project / "notes").mkdir(parents=True)
    (project / "notes" / "todo.txt").write_text("keep me")
    (project / "a_file").write_text("keep me")
    data = write_jsonl(project / "train.jsonl", memorizable_rows())
    cfg = write_config(configs, Path(MISSING_MODEL), data={"train": str(data)}, name="run.yaml")
    monkeypatch.chdir(project)
    result = run_cli(["train", str(cfg), f"train.output_dir={output_dir}", "train.overwrite_output_dir=true"])
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "Traceback" not in result.output and "no-such-model" not in result.output
    assert (project / "notes" / "todo.txt").read_text() == "keep me" and (project / "a_file").read_text() == "keep me"


# --- trust_remote_code -----------------------------------------------------------------------------------------


def model_with_code(tiny_model_dir: Path, folder: Path, marker: Path) -> Path:
    """The tiny Llama with an auto_map to code of its own that leaves `marker` behind when it runs."""
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_marked.MarkedLlama"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_marked.py").write_text(
        "from pathlib import Path\n"
        "from transformers import LlamaForCausalLM\n"
        f"Path({str(marker)!r}).write_text('the model code ran')\n"
        "class MarkedLlama(LlamaForCausalLM):\n"
        "    pass\n"
    )
    return folder


def test_a_runs_saved_trust_remote_code_is_never_honoured_without_the_flag(tmp_path, tiny_model_dir, lora_run):
    marker = tmp_path / "ran.txt"
    base = model_with_code(tiny_model_dir, tmp_path / "base", marker)
    shared = tmp_path / "shared-run"
    shutil.copytree(lora_run, shared)
    saved = yaml.safe_load((shared / "config.yaml").read_text())
    saved["model"] |= {"name": str(base), "trust_remote_code": True}
    (shared / "config.yaml").write_text(yaml.safe_dump(saved))

    for command in (["generate", str(shared), "Hi", "--max-new-tokens", "2"], ["merge", str(shared)]):
        args = command + (["--output", str(tmp_path / "merged")] if command[0] == "merge" else [])
        result = run_cli(args)
        assert result.exit_code == 0, result.output
        assert not marker.exists(), f"{command[0]} ran the model's code"
        said = " ".join(result.output.split())  # the console wraps long lines
        assert "pass --trust-remote-code" in said and "can come from anyone" in said

    trusted = run_cli(["generate", str(shared), "Hi", "--max-new-tokens", "2", "--trust-remote-code"])
    assert trusted.exit_code == 0, trusted.output
    assert marker.read_text() == "the model code ran"  # the flag, on the command, is what allows it


# --- checks that come before the expensive part ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", MISSING_MODEL, "--data", "{test}", "--metrics", "accuracyy"], "did you mean 'accuracy'"),
        (["eval", MISSING_MODEL, "--data", "{tmp}/nothing.jsonl"], "test data not found"),
        (["eval", MISSING_MODEL, "--data", "{test}", "--output-dir", "{taken}"], "pass --overwrite"),
        (["compare", "{config}", "--data", "{test}", "--metrics", "rougeL,blue"], "did you mean 'bleu'"),
        (["compare", "{config}", "--data", "{test}", "--run", "{tmp}/no-run"], "no such run directory"),
        (["generate", MISSING_MODEL, "--input", "{test}", "--output", "{tmp}"], "is a folder; give a file path"),
        (["generate", MISSING_MODEL, "--input", "{test}", "--output", "{taken}/report.md"], "already exists"),
        (["generate", MISSING_MODEL, "--input", "{tmp}/nothing.jsonl"], "--input data not found"),
        (["export", MISSING_MODEL, "--output", "{taken}/report.md"], "already exists"),
        (["train", "{config}", "eval.metrics=[accuracyy]"], "eval.metrics: unknown metric 'accuracyy'"),
    ],
)
def test_a_mistake_is_reported_before_any_model_loads(tmp_path, args, expected):
    test = write_jsonl(tmp_path / "test.jsonl", memorizable_rows(3))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "report.md").write_text("an earlier result")
    config = write_config(tmp_path, Path(MISSING_MODEL), data={"train": str(test)})
    fill = {"{test}": str(test), "{tmp}": str(tmp_path), "{taken}": str(tmp_path / "taken"), "{config}": str(config)}
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
    result = run_cli(args)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "Traceback" not in result.output and "no-such-model" not in result.output
    assert (tmp_path / "taken" / "report.md").read_text() == "an earlier result"
    assert not [p.name for p in tmp_path.rglob(".*tmp*")]


def test_generate_output_is_replaced_only_with_overwrite_and_atomically(tmp_path, lora_run):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in memorizable_rows(2)])
    out = tmp_path / "out.jsonl"
    out.write_text("keep")
    args = ["generate", str(lora_run), "--input", str(prompts), "--output", str(out), "--max-new-tokens", "2"]
    refused = run_cli(args)
    assert refused.exit_code == 2 and out.read_text() == "keep"
    replaced = run_cli([*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert len(out.read_text().splitlines()) == 2 and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "out.jsonl",
        "prompts.jsonl",
    ]


def test_a_package_the_method_needs_is_named_before_any_model_loads(tmp_path, monkeypatch):
    import dataclasses

    from tunelab import methods

    lacking = dataclasses.replace(methods.METHODS["qlora"], requires=("no_such_package_for_tunelab",))
    monkeypatch.setitem(methods.METHODS, "qlora", lacking)
    test = write_jsonl(tmp_path / "train.jsonl", memorizable_rows(3))
    cfg = write_config(tmp_path, Path(MISSING_MODEL), method={"name": "qlora"}, data={"train": str(test)})
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "method.name=qlora needs no_such_package_for_tunelab: pip install no_such_package_for_tunelab" in said
    assert "no-such-model" not in said
