"""The command lines users copy, from README.md's code blocks and from `--help`'s examples, parse with the real CLI.

Nothing runs: each line goes through its command's own click parser, so an unknown option, a missing argument or
a wrong choice fails here with the line it came from. What the parser cannot see is checked the way the command
checks it before loading anything: a shipped config an example names loads with the example's overrides, and
`--metrics` names real metrics.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from tunelab import cli, config
from tunelab.errors import ConfigError
from tunelab.evaluation.metrics import unknown_metrics

ROOT = Path(__file__).resolve().parent.parent
GROUP = typer.main.get_command(cli.app)
# Where the tunelab command ends on a shell line: `tunelab models --json | jq ...`.
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
RICH_MARKUP = re.compile(r"\[/\]|\[/?[a-z]+(?: [a-z]+)*\]")  # [bold]...[/] in the app's help


def readme_lines() -> list[tuple[str, str]]:
    """(where, line) for each line of a fenced code block in README.md that starts with `tunelab `."""
    found, fenced = [], False
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and line.lstrip().startswith("tunelab "):
            found.append((f"README.md:{number}", line.strip()))
    return found


def help_examples() -> list[tuple[str, str]]:
    """(where, line) for the `Example:` in `tunelab --help` and in each command's epilog."""
    texts = {"tunelab --help": GROUP.help or ""}
    texts.update({f"tunelab {name} --help": command.epilog or "" for name, command in GROUP.commands.items()})
    return [
        (where, RICH_MARKUP.sub("", match[1]).strip())
        for where, text in texts.items()
        for match in re.finditer(r"Example:\s*(.+)", text)
    ]


def rejection(line: str) -> str | None:
    """Why `tunelab` would reject this command line before doing any work, or None when it would not."""
    words = shlex.split(line, comments=True)  # a trailing `# comment` goes
    words = words[: next((i for i, word in enumerate(words) if word in SHELL_OPERATORS), len(words))]
    if words[:1] != ["tunelab"] or len(words) < 2 or words[1] not in GROUP.commands:
        return f"no such command: {' '.join(words[:2])!r}; commands: {', '.join(GROUP.commands)}"
    name, args = words[1], words[2:]
    try:
        params = GROUP.commands[name].make_context(f"tunelab {name}", args, resilient_parsing=False).params
    except typer.TyperException as exc:  # typer's own click: what `tunelab` reports as a usage error
        return f"tunelab {name}: {exc.format_message()}"
    cfg = params.get("config")
    if isinstance(cfg, Path) and cfg.parts[0] == "configs":  # a shipped config: it exists, and the overrides fit it
        try:
            config.load(ROOT / cfg, params.get("overrides"))
        except ConfigError as exc:
            return str(exc)
    problems = unknown_metrics(cli._split(params.get("metrics")) or [])
    return "; ".join(problems) or None


@pytest.mark.parametrize("line", [pytest.param(line, id=where) for where, line in readme_lines() + help_examples()])
def test_example_parses_with_the_real_cli(line):
    assert rejection(line) is None, line


def test_the_examples_are_found():
    """Guards the extraction: were it to find nothing, the test above would pass by having no cases."""
    commands = {line.split()[1] for _, line in readme_lines()}
    assert {"train", "inspect-data", "generate", "chat", "eval", "compare"} <= commands
    # `tunelab --help` and every command's own help carry an example of that command.
    examples = dict(help_examples())
    assert set(examples) == {"tunelab --help"} | {f"tunelab {name} --help" for name in GROUP.commands}
    for where, line in examples.items():
        assert f"{line} ".startswith(where.removesuffix("--help")), where  # "tunelab demo --help": "tunelab demo"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("tunelab generate runs/lora hi --max-new-token 5  # a typo", "No such option: --max-new-token"),
        ("tunelab train", "Missing argument"),
        ("tunelab merge runs/lora", "Missing option '--output'"),
        ("tunelab export runs/lora --format onnx --output x.onnx", "'onnx' is not one of 'gguf'"),
        ("tunelab generate runs/lora hi --max-new-tokens 0", "Invalid value for '--max-new-tokens'"),
        ("tunelab finetune configs/lora.yaml", "no such command: 'tunelab finetune'"),
        ("tunelab train configs/lora.yaml train.learning_rat=1e-4", "did you mean `train.learning_rate`?"),
        ("tunelab plan configs/nope.yaml", "config file not found"),
        ("tunelab eval runs/lora --data t.jsonl --metrics rouge,blue > out.txt", "unknown metric 'blue'"),
    ],
)
def test_the_check_rejects_a_broken_example(line, reason):
    assert reason in (rejection(line) or "")
