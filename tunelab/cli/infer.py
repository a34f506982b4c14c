"""Inference commands: generate, chat, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from tunelab.cli.app import (
    MODEL_HELP,
    AdapterOpt,
    DeviceOpt,
    DtypeOpt,
    MaxNewTokensOpt,
    OverwriteOpt,
    TemperatureOpt,
    TopKOpt,
    TopPOpt,
    TrustOpt,
    app,
)


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
    index: Annotated[
        Path | None,
        typer.Option(
            "--index", help="An index (tunelab index): chat requests get retrieved passages, named in the reply."
        ),
    ] = None,
    rag_k: Annotated[int, typer.Option(min=1, help="With --index: passages retrieved per chat request.")] = 4,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Serve the models over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from tunelab import serving
    from tunelab.inference.loading import LoadOptions

    placement = LoadOptions(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if engine == "vllm":
        from tunelab.serving import vllm

        if index is not None:
            from tunelab.errors import ConfigError

            raise ConfigError("--index: retrieval is served by --engine tunelab; vLLM serves the models alone")
        vllm.serve(runs, host, port, api_key, placement)  # becomes vLLM: never returns
    settings = serving.ServerSettings(api_key=api_key, mixed_batches=mixed_batches, retrieval_k=rag_k)
    if index is not None:
        from tunelab.rag import read_manifest

        read_manifest(index)  # a wrong folder says so before the models load
    serving.serve(runs, host, port, settings, placement, index)
