"""The `tunelab` command: thin commands that parse, call one library function and render the result.

tunelab train configs/lora.yaml train.learning_rate=1e-4
tunelab generate runs/demo "Where is my refund?"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from tunelab.cli import usage
from tunelab.config.schema import ModelConfig
from tunelab.console import console
from tunelab.errors import ConfigError, TunelabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Fine-tune a pretrained language model on your own data, and prove it worked.\n\n"
    "Example:  [bold]tunelab train configs/lora.yaml train.num_train_epochs=2[/]",
)

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML). See configs/ for one per method.")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="Overrides as section.key=value.")]
# The choices come from the config's own fields, so the CLI and the YAML accept the same values.
Device = ModelConfig.model_fields["device"].annotation
Dtype = ModelConfig.model_fields["dtype"].annotation
DeviceOpt = Annotated[Device | None, typer.Option(help="Default: the run's, else auto.")]
DtypeOpt = Annotated[Dtype | None, typer.Option(help="Default: the run's, else auto.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let the model's own Python code run. Never taken from a run's saved config: a run directory can come "
        "from anyone, so only this flag, on this command, allows it.",
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output (written atomically).")]


@app.command(epilog="Example:  tunelab train configs/lora.yaml train.max_steps=50 --resume")
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint.")] = False,
) -> None:
    """Fine-tune a model as the config says; writes a self-describing run directory."""
    from tunelab import config as cfgmod
    from tunelab import train as trainmod

    result = trainmod.run(cfgmod.load(config, overrides), resume=resume)
    print(json.dumps({"run_dir": str(result.run_dir), "artifact": str(result.artifact_dir)}))


@app.command("inspect-data", epilog="Example:  tunelab inspect-data configs/lora.yaml")
def inspect_data(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Row counts, token lengths, truncation, and one example with masked vs trained tokens."""
    from tunelab import config as cfgmod
    from tunelab import data, models

    cfg = cfgmod.load(config, overrides)
    report = data.inspect(cfg, models.load_tokenizer(cfg.model))
    report.render(console)


@app.command(epilog="Example:  tunelab models --json | jq -r '.[].name'")
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout (for scripts).")] = False,
) -> None:
    """List the built-in models and what is converted in the cache, with sizes."""
    from tunelab import models as modelsmod

    if as_json:
        print(json.dumps(modelsmod.list_models(), indent=2))
    else:
        modelsmod.render()


@app.command(epilog="Example:  tunelab plan configs/lora.yaml train.per_device_train_batch_size=16")
def plan(
    config: ConfigArg,
    overrides: OverridesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON on stdout.")] = False,
) -> None:
    """Before any weights load: each method's peak memory and time per epoch here, and which to use."""
    from tunelab import config as cfgmod
    from tunelab import planning

    result = planning.plan(cfgmod.load(config, overrides))
    if as_json:
        print(json.dumps(planning.to_dict(result), indent=2))
    else:
        planning.render(result, console)


MODEL_HELP = (
    "A run directory, built-in alias, local model dir, hub id or .gguf; or several adapter runs of one base, "
    "comma-separated (runs/a,runs/b), loaded together."
)
AdapterOpt = Annotated[
    str | None,
    typer.Option("--adapter", help="With several runs: the adapter to use (its name; default: the first run's)."),
]
MaxNewTokensOpt = Annotated[int, typer.Option(min=1, help="Most tokens generated per answer.")]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, help="0 = greedy (the default).")]
TopKOpt = Annotated[int | None, typer.Option(min=1)]
TopPOpt = Annotated[float | None, typer.Option(min=0.0, max=1.0)]


@app.command(epilog='Example:  tunelab generate runs/demo "My invoice is wrong" --max-new-tokens 64')
def generate(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    prompt: Annotated[str | None, typer.Argument(help="The prompt (or use --input).")] = None,
    adapter: AdapterOpt = None,
    input: Annotated[Path | None, typer.Option("--input", help="JSONL of prompts: {prompt} or {messages}.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write JSONL results here.")] = None,
    max_new_tokens: MaxNewTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    seed: int | None = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together.")] = 8,
    system: Annotated[str | None, typer.Option(help="System prompt (default: the run's).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: TrustOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate from a model or a finished run: one prompt, or a JSONL file of them (batched)."""
    from tunelab.inference import batch
    from tunelab.inference.generation import decoding
    from tunelab.inference.loading import LoadOptions

    batch.run_generate(
        model,
        prompt,
        input,
        output,
        decoding(max_new_tokens, temperature, top_k, top_p, seed),
        LoadOptions(adapter, device, dtype, trust_remote_code),
        batch_size=batch_size,
        system=system,
        overwrite=overwrite,
    )


@app.command(epilog="Example:  tunelab chat runs/demo --temperature 0.7")
def chat(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    adapter: AdapterOpt = None,
    max_new_tokens: MaxNewTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    seed: int | None = None,
    system: Annotated[str | None, typer.Option(help="System prompt (default: the run's).")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Chat interactively; tokens stream as they are generated. Empty line or Ctrl-D quits."""
    from tunelab.inference import chat as chatmod
    from tunelab.inference.generation import decoding
    from tunelab.inference.loading import LoadOptions

    chatmod.run_chat(
        model,
        decoding(max_new_tokens, temperature, top_k, top_p, seed),
        LoadOptions(adapter, device, dtype, trust_remote_code),
        system=system,
    )


@app.command(epilog="Example:  tunelab combine runs/tickets runs/tone --weights 1.0,0.5 --output runs/tickets+tone")
def combine(
    runs: Annotated[list[str], typer.Argument(help="Two or more LoRA runs of the same base.")],
    weights: Annotated[str, typer.Option(help="One weight per run, comma-separated.")],
    output: Annotated[Path, typer.Option(help="The new run directory.")],
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Combine LoRA adapters into a new adapter run: the weighted sum of their updates (through peft)."""
    from tunelab.export import combine as combinemod

    try:
        parsed = [float(w) for w in weights.split(",")]
    except ValueError:
        raise ConfigError(f"--weights {weights!r}: numbers, comma-separated; e.g. --weights 1.0,0.5") from None
    combinemod.combine(runs, parsed, output, overwrite=overwrite, trust_remote_code=trust_remote_code)


@app.command(epilog="Example:  tunelab merge runs/demo --output merged/demo")
def merge(
    run: Annotated[str, typer.Argument(help="A finished adapter run (lora, qlora, ia3).")],
    output: Annotated[Path, typer.Option(help="The new model directory.")],
    dtype: Annotated[
        Literal["float32", "bfloat16", "float16"], typer.Option(help="The saved weights' dtype.")
    ] = "float32",
    tolerance: Annotated[
        float | None, typer.Option(min=0.0, help="Allowed max logit diff, relative to the logits.")
    ] = None,
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fold a run's adapter into its base: a standalone model, checked against base + adapter."""
    from tunelab.export import merge as mergemod

    mergemod.merge_run(run, output, dtype, tolerance, overwrite=overwrite, trust_remote_code=trust_remote_code)


@app.command(epilog="Example:  tunelab export runs/demo --format gguf --dtype q8_0 --output demo.gguf")
def export(
    run: Annotated[str, typer.Argument(help="A finished run (adapter runs are merged first) or a model directory.")],
    output: Annotated[Path, typer.Option(help="The file to write.")],
    format: Annotated[
        Literal["gguf"], typer.Option("--format", help="gguf (llama.cpp / Ollama; Llama-family models).")
    ] = "gguf",
    dtype: Annotated[Literal["f32", "f16", "bf16", "q8_0"], typer.Option(help="The GGUF's tensor type.")] = "f16",
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Export for other runtimes, checked by loading the file back and comparing logits."""
    from tunelab.export.run_export import export_run

    export_run(run, output, dtype, format, overwrite=overwrite, trust_remote_code=trust_remote_code)


@app.command(
    epilog="Example:  tunelab serve runs/tickets runs/summaries --port 8000\n\n"
    "On a GPU machine with vLLM:  tunelab serve --engine vllm runs/tickets runs/summaries"
)
def serve(
    runs: Annotated[
        list[str], typer.Argument(help="A run, model or alias; or several adapter runs of one base, served together.")
    ],
    engine: Annotated[
        Literal["tunelab", "vllm"],
        typer.Option(help="tunelab: this process serves. vllm: run `vllm serve` on the same models (LoRA runs)."),
    ] = "tunelab",
    host: Annotated[str, typer.Option(help="Address to bind; another than 127.0.0.1 opens it to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TUNELAB_API_KEY", help="Ask every request but /health for Authorization: Bearer KEY."),
    ] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    mixed_batches: Annotated[
        bool,
        typer.Option(
            help="LoRA runs: requests for different adapters share a batch. In bf16 that rounds each adapter's "
            "update once more, so an answer can differ slightly from one decoded beside its own adapter only."
        ),
    ] = True,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Serve the models over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from tunelab import serving
    from tunelab.inference.loading import LoadOptions

    placement = LoadOptions(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if engine == "vllm":
        from tunelab.serving import vllm

        vllm.serve(runs, host, port, api_key, placement)  # becomes vLLM: never returns
    settings = serving.ServerSettings(api_key=api_key, mixed_batches=mixed_batches)
    serving.serve(runs, host, port, settings, placement)


MetricsOpt = Annotated[
    str | None,
    typer.Option("--metrics", help="Comma-separated: exact_match, json_fields, rougeL, bleu, chrf, f1, ..."),
]


@app.command(
    "eval", epilog="Example:  tunelab eval runs/demo --data examples/support_tickets/test.jsonl --metrics json_fields"
)
def eval_(
    model: Annotated[str, typer.Argument(help="A run directory, built-in alias, local model dir, hub id or .gguf.")],
    data: Annotated[Path | None, typer.Option("--data", help="Test file (default: the config's eval.test).")] = None,
    metrics: MetricsOpt = None,
    config: Annotated[
        Path | None, typer.Option(help="Prompt format/system for a plain model (runs bring theirs).")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where metrics.json, predictions.jsonl, report.md go.")
    ] = None,
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Generate answers for a test set and score them: every metric with a 95% bootstrap interval."""
    from tunelab.evaluation import evaluate as evalmod

    job = evalmod.prepare(model, data, _split(metrics), config, output_dir, overwrite, trust_remote_code)
    result = evalmod.run(job)  # prepare ran every check that needs no weights
    console.print(evalmod.markdown(result), markup=False, soft_wrap=True)
    console.print(f"wrote {job.output_dir}/metrics.json, predictions.jsonl, report.md", markup=False)


@app.command(epilog="Example:  tunelab compare configs/demo.yaml --run runs/demo")
def compare(
    config: ConfigArg,
    run: Annotated[list[str] | None, typer.Option("--run", help="A fine-tuned run directory (repeatable).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Test file (default: the config's eval.test).")] = None,
    metrics: MetricsOpt = None,
    output_dir: Annotated[Path, typer.Option(help="Where compare.md/.json/.png go.")] = Path("runs/compare"),
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Zero-shot vs few-shot vs fine-tuned on one test set: which is worth it, and by how much."""
    from tunelab.evaluation import compare as comparemod

    job = comparemod.prepare(config, data, run or [], _split(metrics), output_dir, overwrite, trust_remote_code)
    arms = comparemod.run(job)  # prepare ran every check that needs no weights
    console.print(comparemod.table(arms))
    console.print(comparemod.verdict(arms), markup=False, soft_wrap=True)
    console.print(f"wrote {output_dir}/compare.md, compare.json, compare.png", markup=False)


def _split(metrics: str | None) -> list[str] | None:
    return [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None


@app.command(epilog="Example:  tunelab demo")
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where the demo run goes.")] = Path("runs/demo"),
    config: Annotated[Path, typer.Option(help="The run config.")] = Path("configs/demo.yaml"),
    test_file: Annotated[Path, typer.Option(help="Held-out rows scored before and after.")] = Path(
        "examples/support_tickets/test.jsonl"
    ),
) -> None:
    """The main job: fine-tune the built-in model on the support-ticket task, show before/after."""
    from tunelab import demo as demomod

    demomod.run(output_dir, config, test_file)


# Commands that train or evaluate at length re-run themselves on tcmalloc when the machine has it
# (tunelab.launch: a third less memory, no slower).
ALLOCATOR_COMMANDS = {"train", "demo", "eval", "compare"}


def main(argv: list[str] | None = None) -> None:
    try:
        if argv is None and next((a for a in sys.argv[1:] if not a.startswith("-")), None) in ALLOCATOR_COMMANDS:
            from tunelab import launch

            launch.rerun_with_tcmalloc()
        code = app(args=argv, standalone_mode=False, prog_name="tunelab")
    except TunelabError as exc:
        fail(str(exc))
    except typer.TyperException as exc:  # typer's own click: usage errors (unknown option, bad value, ...)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `tunelab` alone: the help, as asked
            print(exc.format_message(), file=sys.stderr)
            sys.exit(0)
        fail(usage.describe(exc, app))
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    # typer turns Ctrl-C into Exit(130), which a non-standalone call returns instead of raising.
    if code == 130:
        console.print("[yellow]interrupted[/] (a training run stopped this way stays incomplete; --resume goes on)")
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


def fail(message: str) -> None:
    console.print("[bold red]error:[/]", end=" ")
    console.print(message, markup=False, soft_wrap=True)  # paths and [brackets] printed as they are
    sys.exit(2)
