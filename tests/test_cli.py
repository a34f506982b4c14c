"""The CLI as a user meets it: help with examples, generate/chat from a finished run, inspect-data, models."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import memorizable_rows, run_cli, write_config, write_jsonl
from tunelab import cli

COMMANDS = ["train", "inspect-data", "generate", "chat", "models", "demo"]


def train_run(tmp, model_dir, method, train):
    cfg = write_config(tmp, model_dir, method=method, train={"logging_steps": 20, **train})
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    return tmp / "run"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    """A full fine-tune of the tiny model that memorized the word list (so its answers are predictable)."""
    train = {"max_steps": 60, "learning_rate": 1e-2, "lr_scheduler_type": "constant"}
    return train_run(tmp_path_factory.mktemp("cli_run"), tiny_model_dir, {"name": "full"}, train)


def test_generate_from_a_lora_run_loads_base_plus_adapter(tmp_path, tiny_model_dir):
    """The run directory alone is enough: same text as loading the base and the adapter by hand with peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.inference.generation import Decoding, generate

    run = train_run(
        tmp_path, tiny_model_dir, {"name": "lora", "r": 8, "alpha": 16}, {"max_steps": 10, "learning_rate": 5e-2}
    )
    prompt = memorizable_rows()[5]["prompt"]
    result = run_cli(["generate", str(run), prompt, "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    by_hand = PeftModel.from_pretrained(base, str(run / "adapter"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = generate(by_hand, tokenizer, [prompt], Decoding(max_new_tokens=6))[0]
    assert result.stdout.rstrip("\n") == expected


def test_help_lists_commands_with_an_example():
    result = run_cli(["--help"])
    assert result.exit_code == 0
    assert all(c in result.output for c in COMMANDS) and "Example" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_has_an_example(command):
    result = run_cli([command, "--help"])
    assert result.exit_code == 0 and f"tunelab {command}" in result.output and "Example" in result.output


def test_generate_from_a_run_gives_the_memorized_answer(finished_run):
    rows = memorizable_rows()
    result = run_cli(["generate", str(finished_run), rows[2]["prompt"], "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == rows[2]["completion"]


def test_generate_many_from_jsonl_keeps_order(finished_run, tmp_path):
    rows = memorizable_rows()
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in rows])
    out = tmp_path / "out.jsonl"
    args = ["generate", str(finished_run), "--input", str(prompts), "--output", str(out), "--batch-size", "3"]
    result = run_cli([*args, "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["prompt"] for w in written] == [r["prompt"] for r in rows]
    assert [w["output"] for w in written] == [r["completion"] for r in rows]


def test_generate_samples_at_a_temperature_and_a_seed_repeats_it(finished_run):
    args = ["generate", str(finished_run), "Tell me a story.", "--temperature", "1.5", "--max-new-tokens", "12"]

    def sample(seed: int) -> str:
        result = run_cli([*args, "--top-k", "50", "--top-p", "0.95", "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        return result.stdout

    first = sample(3)
    assert sample(3) == first
    # Greedy decoding gives one text whatever the seed: different texts for different seeds show it samples.
    assert len({first, *(sample(seed) for seed in (4, 5, 6))}) > 1


def test_generate_bad_input_file_names_the_line(finished_run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n{"text": "no prompt"}\n')
    result = run_cli(["generate", str(finished_run), "--input", str(bad)])
    assert result.exit_code != 0
    assert (
        "bad.jsonl:2: not valid JSON" in result.output and "bad.jsonl:3: needs a non-empty `prompt`" in result.output
    )
    assert "Traceback" not in result.output


def test_generate_bad_decoding_option_is_a_clean_error(finished_run):
    result = run_cli(["generate", str(finished_run), "hi", "--top-k", "0"])
    assert result.exit_code == 2 and "'--top-k'" in result.output and "Traceback" not in result.output


def test_chat_streams_answers_and_keeps_history(finished_run):
    import click.testing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.inference.generation import Decoding, generate

    rows = memorizable_rows()
    command = click.Command("tunelab", callback=lambda: cli.main(["chat", str(finished_run), "--max-new-tokens", "8"]))
    result = click.testing.CliRunner().invoke(command, [], input=f"{rows[1]['prompt']}\n{rows[4]['prompt']}\n\n")
    assert result.exit_code == 0, result.output
    answers = [line.split("assistant> ", 1)[1] for line in result.stdout.splitlines() if "assistant> " in line]
    assert answers[0] == rows[1]["completion"]
    # The second turn is answered with the whole conversation as context.
    model = AutoModelForCausalLM.from_pretrained(finished_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(finished_run / "model")
    history = [
        {"role": "user", "content": rows[1]["prompt"]},
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": rows[4]["prompt"]},
    ]
    assert answers[1] == generate(model, tokenizer, [history], Decoding(max_new_tokens=8))[0]


def test_inspect_data_shows_counts_and_an_example_row(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal, so rich does not wrap the table's cells
    rows = memorizable_rows()
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = write_config(tmp_path, tiny_model_dir, data={"train": str(train), "val_size": 2})
    result = run_cli(["inspect-data", str(cfg)])
    assert result.exit_code == 0, result.output
    table = dict(re.findall(r"^│ (.+?) +│ (.+?) +│$", result.output, flags=re.MULTILINE))
    assert table["format"] == "prompt_completion" and table["bad rows"] == "none"
    assert (table["rows read"], table["train rows"], table["validation rows"]) == ("8", "6", "2")
    # The example is the train row it names, rendered through the chat template.
    line = int(re.search(rf"^Example \({re.escape(str(train))}:(\d+)\)", result.output, flags=re.MULTILINE)[1])
    example = result.output.split("green = trained", 1)[1]
    assert f"user\n{rows[line - 1]['prompt']}<|im_end|>" in example
    assert f"assistant\n{rows[line - 1]['completion']}<|im_end|>" in example


def test_models_lists_the_builtin(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal, so rich does not wrap the table's cells
    result = run_cli(["models"])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m-instruct" in result.output


def test_generate_on_a_plain_model_does_not_import_peft_or_datasets(tiny_model_dir):
    """`tunelab generate` starts fast: peft (+ bitsandbytes) and datasets cost ~6 s of import on a 2-core CPU
    and a plain model needs neither. A fresh interpreter, as the command runs."""
    import subprocess
    import sys

    code = (
        "import sys; from tunelab.inference import chat, loading; "
        "from tunelab.inference.generation import Decoding; "
        f"loaded = loading.load_model_or_runs({str(tiny_model_dir)!r}, loading.LoadOptions(device='cpu')); "
        "chat.print_streamed(loaded, 'Hi', Decoding(max_new_tokens=3), None); "
        "print(sorted(m for m in ('peft', 'datasets', 'bitsandbytes', 'trl') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
