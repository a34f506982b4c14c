"""Every CLI mistake is one line with the fix (valid choices or the nearest option), exit 2, no traceback; Ctrl-C
exits 130; listings survive a pipe. The table is built from the app itself, so a new command is covered too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin, get_type_hints

import pytest
import typer

from tests.helpers import run_cli, write_config
from tunelab import cli

TUNELAB = Path(sys.executable).parent / "tunelab"
COMMANDS = typer.main.get_command(cli.app).commands  # name -> click command


def dummy_arguments(command) -> list[str]:
    """A value for each required argument, so the option under test is what fails."""
    return ["x" for p in command.params if p.param_type_name == "argument" and p.required]


def value_type(hint) -> object:
    """int, float, a Literal[...] or another type, from an annotation like Annotated[int | None, typer.Option()]."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) in (Union, UnionType):
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


def usage_mistakes() -> list[tuple[list[str], str]]:
    """(argv, what the line must say) for every command: an unknown option, one a letter short (the nearest is
    offered), a missing argument, a non-number where a number goes, a value outside the choices."""
    table: list[tuple[list[str], str]] = [
        (["trian", "configs/lora.yaml"], "Did you mean 'train'"),
        (["frobnicate"], "commands: "),
    ]
    callbacks = {info.name or info.callback.__name__: info.callback for info in cli.app.registered_commands}
    for name, command in sorted(COMMANDS.items()):
        table.append(([name, "--no-such-option"], "no such option --no-such-option"))
        args = dummy_arguments(command)
        options = [o for p in command.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")]
        if options:
            table.append(([name, *args, options[0][:-1]], f"did you mean {options[0]}"))
        if args:
            missing = next(p for p in command.params if p.param_type_name == "argument" and p.required)
            table.append(([name], f"Missing argument {missing.name.upper()}"))
        hints = get_type_hints(callbacks[name], include_extras=True)
        for param in command.params:
            kind = value_type(hints[param.name])
            if param.param_type_name == "option" and kind in (int, float):
                table.append(([name, *args, param.opts[0], "many"], "valid "))
            elif param.param_type_name == "option" and get_origin(kind) is Literal:
                table.append(([name, *args, param.opts[0], "gpu"], "is not one of"))
    return table


TABLE = usage_mistakes()


@pytest.mark.parametrize(("argv", "expected"), TABLE, ids=[" ".join(argv) for argv, _ in TABLE])
def test_a_usage_mistake_is_one_line_and_exit_2(argv, expected):
    result = run_cli(argv)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    assert lines[0].startswith("error: tunelab") and expected in lines[0], lines[0]


def test_the_table_covers_every_command_and_kind_of_mistake():
    covered = {argv[0] for argv, _ in TABLE}
    assert set(COMMANDS) <= covered and len(COMMANDS) >= 12
    kinds = {expected.split()[0] for _, expected in TABLE}
    assert {"no", "did", "Missing", "valid", "is"} <= kinds  # option, nearest, argument, number, choice


def test_generate_rejects_a_device_before_loading_anything():
    result = run_cli(["generate", "no/such-model", "hi", "--device", "gpu"])
    assert result.exit_code == 2 and "'gpu' is not one of 'auto', 'cpu', 'cuda', 'mps'" in result.output


def test_bare_command_prints_help_and_exits_0():
    result = run_cli([])
    assert result.exit_code == 0 and "Usage" in result.output and "Traceback" not in result.output


def child_env() -> dict[str, str]:
    return {**os.environ, "TUNELAB_ALLOCATOR": "system", "PYTHONUNBUFFERED": "1"}


def test_ctrl_c_during_training_exits_130_and_leaves_the_run_incomplete(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 100_000, "save_steps": 100_000})
    log = tmp_path / "stderr.txt"
    # stderr to a file, not a pipe: nothing the child writes can block it while the test waits. PYTHONFAULTHANDLER:
    # should it hang, SIGABRT makes it print every thread's stack into that file, so the failure says where.
    with log.open("w") as stderr_file:
        child = subprocess.Popen(
            [str(TUNELAB), "train", str(cfg), "forgetting.enabled=false"],
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env={**child_env(), "PYTHONFAULTHANDLER": "1"},
        )
    deadline = time.monotonic() + 240
    while not (tmp_path / "run" / "config.yaml").is_file():  # written once training is about to start
        assert child.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(3)  # inside the training loop
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=120)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)
        child.wait(timeout=30)
        raise AssertionError("no exit within 120 s of Ctrl-C; its stacks:\n" + log.read_text()[-6000:]) from None
    stderr = log.read_text()
    assert child.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run" / "COMPLETE").exists()


def test_models_listing_keeps_names_whole_in_a_pipe_and_has_json():
    env = {**os.environ, "COLUMNS": "80"}
    piped = subprocess.run([str(TUNELAB), "models"], capture_output=True, text=True, env=env, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert any("smollm2-135m-instruct" in line for line in piped.stdout.splitlines())
    listed = json.loads(subprocess.run([str(TUNELAB), "models", "--json"], capture_output=True, timeout=120).stdout)
    assert "smollm2-135m-instruct" in [row["name"] for row in listed]
