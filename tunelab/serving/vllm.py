"""`tunelab serve --engine vllm`: the same models behind vLLM's OpenAI server, for a GPU machine.

    tunelab serve --engine vllm runs/tickets runs/summaries --port 8000
    # runs: vllm serve <base model dir> --served-model-name <base> --enable-lora
    #         --lora-modules tickets=runs/tickets/adapter summaries=runs/summaries/adapter --max-lora-rank 16 ...

The model names are the ones `tunelab serve` answers to (the base by its model name, each adapter by its name), so
a client moves from one server to the other by its base_url alone. vLLM loads LoRA adapters in peft's format
(adapter_config.json + adapter_model.safetensors), which is what a `lora` run saves; every other adapter method is
folded into its base first (`tunelab merge`) and served as a whole model.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from tunelab import artifacts, models
from tunelab.config.schema import ModelConfig
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.inference.loading import LoadOptions, adapter_name, check_shared_base, run_config

# vLLM accepts only these values for --max-lora-rank (vllm/config/lora.py, MaxLoRARanks: 1, 8, 16, ..., 512); the
# runs' largest r is rounded up to the next one. 1 is left out: an r=1 run asks for 8, which older vLLMs take too.
MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VllmCommand:
    """argv for `os.execvp`; env: what it adds to the environment (the API key: never on a command line, where
    `ps` shows it to every user of the machine; vLLM reads VLLM_API_KEY as it reads --api-key)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def serve(refs: list[str], host: str, port: int, api_key: str | None, placement: LoadOptions) -> NoReturn:
    """Check vLLM is here, build its command line, and replace this process with it."""
    if not installed():
        raise ConfigError(
            "--engine vllm: vLLM is not installed here; on a machine with an NVIDIA GPU: pip install vllm "
            "(or serve here with the default --engine tunelab)"
        )
    command = vllm_command(refs, host, port, api_key, placement)
    info("running: " + " ".join(command.argv))
    os.execvpe(command.argv[0], command.argv, {**os.environ, **command.env})


def vllm_command(
    refs: list[str], host: str, port: int, api_key: str | None, placement: LoadOptions | None = None
) -> VllmCommand:
    """The `vllm serve` command that serves `refs` under the names `tunelab serve` gives them. placement.dtype:
    tunelab's names (auto, bfloat16, float16, float32) are vLLM's --dtype names too; vLLM places the model
    itself, so a device is refused."""
    placement = placement or LoadOptions()
    if placement.device is not None:
        raise ConfigError(
            f"--device {placement.device}: vLLM places the model itself (GPUs: set CUDA_VISIBLE_DEVICES)"
        )
    trust_remote_code = placement.trust_remote_code
    if all(artifacts.looks_like_run(r) for r in refs) and _adapter_runs(refs):
        argv = _lora_argv(refs, trust_remote_code)
    elif len(refs) > 1:
        raise ConfigError("several models need adapter runs of one base", [f"got: {', '.join(refs)}"])
    else:
        argv = ["vllm", "serve", _whole_model_dir(refs[0]), "--served-model-name", refs[0].rstrip("/")]
    argv += ["--host", host, "--port", str(port)]
    if placement.dtype is not None:
        argv += ["--dtype", placement.dtype]
    if trust_remote_code:
        argv.append("--trust-remote-code")
    return VllmCommand(argv, {"VLLM_API_KEY": api_key} if api_key else {})


def _adapter_runs(refs: list[str]) -> bool:
    kinds = {artifacts.open_run(r).artifact_kind for r in refs}
    if kinds == {"adapter"}:
        return True
    if len(refs) > 1:
        raise ConfigError("several models need adapter runs of one base", [f"got: {', '.join(refs)}"])
    return False


def _lora_argv(refs: list[str], trust_remote_code: bool) -> list[str]:
    runs = [(ref, *run_config(ref, trust_remote_code)) for ref in refs]
    for ref, _, cfg in runs:
        _check_vllm_loads(ref, cfg.method)
    check_shared_base(runs)
    base_cfg = runs[0][2]
    for ref, _, cfg in runs:
        if cfg.data.system:  # vLLM renders the messages a client sends, and only those
            info(f"{ref}: vLLM does not add the run's system prompt (data.system); clients should send it")
    modules = [f"{adapter_name(cfg, ref)}={run.artifact_dir}" for ref, run, cfg in runs]
    rank = max(cfg.method.r for _, _, cfg in runs)
    return [
        "vllm",
        "serve",
        str(models.model_dir(base_cfg.model)),
        "--served-model-name",
        base_cfg.model.name,
        # The run's tokenizer carries the chat template it trained with (the base's may have none).
        "--tokenizer",
        str(runs[0][1].artifact_dir),
        "--enable-lora",
        "--lora-modules",
        *modules,
        "--max-lora-rank",
        str(_vllm_rank(rank)),
        "--max-loras",
        str(len(modules)),
    ]


def _check_vllm_loads(ref: str, method: object) -> None:
    name = getattr(method, "name", "?")
    why = None
    if name != "lora":
        why = f"it was trained with {name}, and vLLM loads only LoRA adapters"
    elif getattr(method, "use_dora", False):
        why = "it is a DoRA adapter, which vLLM does not load"
    if why:
        merged = f"merged/{Path(ref).resolve().name}"
        raise ConfigError(
            f"{ref}: vLLM cannot serve this run as an adapter: {why}",
            [
                f"fold it into its base and serve the result: tunelab merge {ref} --output {merged}, "
                f"then tunelab serve --engine vllm {merged}"
            ],
        )


def _vllm_rank(r: int) -> int:
    fitting = [rank for rank in MAX_LORA_RANKS if rank >= r]
    if not fitting:
        raise ConfigError(f"LoRA rank {r} is over vLLM's largest --max-lora-rank ({MAX_LORA_RANKS[-1]})")
    return fitting[0]


def _whole_model_dir(ref: str) -> str:
    """A whole-model run's model/, or what a model name stands for (a built-in or GGUF: its converted
    Hugging Face directory; a local directory or hub id as it is)."""
    if artifacts.looks_like_run(ref):
        return str(artifacts.open_run(ref).artifact_dir)
    return str(models.model_dir(ModelConfig(name=ref)))
