"""Load what generation needs from a model reference, a finished run, or several runs on one base.

loaded = load_for_inference("runs/demo")          # base model + the run's adapter (merged when it can be)
loaded = load_for_inference("smollm2-135m-instruct")
loaded = load_runs(["runs/tickets", "runs/summaries"])   # one base, both adapters, switchable
loaded.use("summaries")                                    # no reload: the base stays in memory
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoTokenizer

from tunelab import artifacts, methods, models
from tunelab.config import ModelConfig, RunConfig, validate
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.methods import new_tokens


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    template: str = "auto"
    system: str | None = None
    source: str = ""
    # Several adapters on one base: name -> (template, system) of the run it came from.
    adapters: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # The method those adapters share (check_shared_base): its spec knows how to switch between them.
    method: str | None = None
    # Those adapters can serve different rows of one batch (the method's `mixed_batches`, for every run).
    mixed_batches: bool = False

    def use(self, name: str) -> None:
        """Make adapter `name` the active one (and its run's prompt template and system prompt)."""
        if name not in self.adapters:
            raise ConfigError(f"no adapter named {name!r}", [f"loaded adapters: {', '.join(self.adapters)}"])
        methods.get(self.method).activate(self.model, name)
        self.template, self.system = self.adapters[name]
        self.source = name


@dataclass(frozen=True)
class LoadOptions:
    """What to load and how: `adapter` picks one of several runs; None device/dtype: the run's, else auto."""

    adapter: str | None = None
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False


def load_model_or_runs(model_ref: str, options: LoadOptions) -> Loaded:
    """One model or run; or several runs on one base, comma-separated, with `adapter` (default: the first) active."""
    refs = [r.strip() for r in model_ref.split(",") if r.strip()]
    placement = {"device": options.device, "dtype": options.dtype, "trust_remote_code": options.trust_remote_code}
    if len(refs) == 1 and options.adapter is None:
        return load_for_inference(refs[0], **placement)
    if not all(artifacts.looks_like_run(r) for r in refs):
        raise ConfigError(
            "--adapter and several models need run directories: "
            "tunelab generate runs/tickets,runs/summaries --adapter summaries 'prompt'"
        )
    loaded = load_runs(refs, **placement)
    if options.adapter is not None:
        loaded.use(options.adapter)
    return loaded


def load_for_inference(
    ref: str, device: str | None = None, dtype: str | None = None, merge: bool = True, trust_remote_code: bool = False
) -> Loaded:
    """device/dtype None: the run's own settings (for a run directory), else auto. The model's own Python code runs
    only with `trust_remote_code` from the caller, never from a run's saved config."""
    if artifacts.looks_like_run(ref):
        return load_run(ref, device, dtype, merge, trust_remote_code)
    cfg = ModelConfig(name=ref, device=device or "auto", dtype=dtype or "auto", trust_remote_code=trust_remote_code)
    return Loaded(*load_plain(cfg), source=ref)


def load_plain(cfg: ModelConfig, **load_options: Any) -> tuple[Any, Any]:
    device = models.pick_device(cfg.device)
    tokenizer = models.load_tokenizer(cfg)
    task = models.resolve_task(cfg)
    dtype = models.pick_dtype(cfg.dtype, device)
    model = models.load_model(cfg, dtype=dtype, device=device, task=task, **load_options)
    model.eval()
    return model, tokenizer


def run_config(path: str, trust_remote_code: bool = False) -> tuple[artifacts.CompletedRun, RunConfig]:
    """A finished run and its config, with model.trust_remote_code set by the caller, not by the saved config:
    a run directory can come from anyone, and loading it must not run its base model's code unasked."""
    run = artifacts.open_run(path)  # raises RunIncompleteError for a run that did not finish
    cfg = validate(yaml.safe_load(run.config_yaml), source=str(Path(path) / "config.yaml"))
    if cfg.model.trust_remote_code and not trust_remote_code:
        info(
            f"{path}: its config has model.trust_remote_code=true; the model's own code is not trusted from a saved "
            "run (a run directory can come from anyone): pass --trust-remote-code to this command if you trust it"
        )
    model = cfg.model.model_copy(update={"trust_remote_code": trust_remote_code})
    return run, cfg.model_copy(update={"model": model})


def load_base_for(cfg: RunConfig, device: str | None, dtype: str | None, run_path: str | Path = "") -> Any:
    """The run's base model as it trained on (quantized for qlora; with the classification head of the run's
    label set for a classifier), on the requested device and dtype."""
    model_cfg = cfg.model.model_copy(update={"device": device or cfg.model.device, "dtype": dtype or cfg.model.dtype})
    compute_dtype = models.pick_dtype(model_cfg.dtype, models.pick_device(model_cfg.device))
    options = methods.get(cfg.method.name).load_options(cfg.method, compute_dtype)
    if models.resolve_task(cfg.model) == "sequence_classification":
        options |= models.classifier_options(run_labels(run_path))
    base = load_plain(model_cfg, **options)[0]
    if cfg.data.new_tokens:  # the run added tokens: its adapter holds their rows, for a base grown to hold them
        new_tokens.fit_vocabulary(base, len(run_tokenizer(artifacts.open_run(run_path), cfg)))
    return base


def run_labels(run_path: str | Path) -> list[str] | None:
    """The label set a run trained with (its data report)."""
    metrics = Path(run_path) / "metrics.json"
    return json.loads(metrics.read_text()).get("data", {}).get("labels") if metrics.is_file() else None


def load_run(path: str, device: str | None, dtype: str | None, merge: bool, trust_remote_code: bool = False) -> Loaded:
    """A finished run: its base model with its adapter (or its whole model), its prompt template and system."""
    run, cfg = run_config(path, trust_remote_code)
    method = methods.get(cfg.method.name)
    if run.artifact_kind == "adapter":
        model = method.attach(load_base_for(cfg, device, dtype, path), run.artifact_dir, adapter_name(cfg, path))
        # Merged weights generate faster (no extra matmuls); the files on disk stay an adapter. A quantized
        # base is left as it is: merging into 4-bit weights would round the update away.
        if merge and method.mergeable and not getattr(model, "is_quantized", False):
            model = model.merge_and_unload()
    else:
        model, _ = load_plain(
            cfg.model.model_copy(
                update={
                    "name": str(run.artifact_dir),
                    "device": device or cfg.model.device,
                    "dtype": dtype or cfg.model.dtype,
                }
            )
        )
    model.eval()
    tokenizer = run_tokenizer(run, cfg)  # saved with the run: the one it trained with
    return Loaded(model, tokenizer, cfg.data.template, cfg.data.system, source=str(path))


def adapter_name(cfg: RunConfig, path: str) -> str:
    """method.adapter_name, else the run directory's name with each "." as "_": peft keeps adapters in module
    dicts, whose keys cannot hold a dot (runs/lr-1.5e-4 is served as lr-1_5e-4)."""
    return getattr(cfg.method, "adapter_name", None) or Path(path).resolve().name.replace(".", "_")


def run_tokenizer(run: artifacts.CompletedRun, cfg: RunConfig) -> Any:
    # False, not None: transformers would otherwise ask on stdin for a tokenizer with code of its own.
    return AutoTokenizer.from_pretrained(run.artifact_dir, trust_remote_code=cfg.model.trust_remote_code)


def load_runs(
    paths: list[str], device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False
) -> Loaded:
    """Several adapter runs of one base: the base is loaded once, each adapter attached under its name
    (method.adapter_name, else the run directory's name); the first is active."""
    runs = [(path, *run_config(path, trust_remote_code)) for path in paths]
    check_shared_base(runs)
    _, first_run, first_cfg = runs[0]
    model = load_base_for(first_cfg, device, dtype, paths[0])
    adapters: dict[str, tuple[str, str | None]] = {}
    for path, run, cfg in runs:
        name = adapter_name(cfg, path)
        if name in adapters:
            raise ConfigError(
                f"two runs have the adapter name {name!r}", [f"{path}: set method.adapter_name to tell them apart"]
            )
        model = methods.get(cfg.method.name).attach(model, run.artifact_dir, name)
        adapters[name] = (cfg.data.template, cfg.data.system)
    model.eval()
    mixed = all(methods.get(cfg.method.name).mixed_batches(cfg.method) for _, _, cfg in runs)
    tokenizer = run_tokenizer(first_run, first_cfg)
    loaded = Loaded(model, tokenizer, adapters=adapters, method=first_cfg.method.name, mixed_batches=mixed)
    loaded.use(next(iter(adapters)))
    return loaded


def check_shared_base(runs: list[tuple[str, artifacts.CompletedRun, RunConfig]]) -> None:
    """Adapters share a base only if they trained on the same one, loaded the same way, with one method."""
    first_path, _, first = runs[0]
    for path, run, cfg in runs:
        if run.artifact_kind != "adapter":
            raise ConfigError(f"{path} holds a whole model, not an adapter", ["give only adapter runs (lora, ...)"])
        if cfg.data.new_tokens and len(runs) > 1:
            raise ConfigError(
                f"{path} added tokens of its own (data.new_tokens): its vocabulary is not the base's; load it alone"
            )
        same = (cfg.model.name, cfg.method.name, cfg.model.dtype) == (
            first.model.name,
            first.method.name,
            first.model.dtype,
        )
        if not same:
            raise ConfigError(
                f"{path} and {first_path} do not share a base",
                [
                    f"{first_path}: {first.model.name}, method {first.method.name}, dtype {first.model.dtype}",
                    f"{path}: {cfg.model.name}, method {cfg.method.name}, dtype {cfg.model.dtype}",
                ],
            )
