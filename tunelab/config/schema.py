"""The one typed, strict, frozen run config.

Every option is documented once, here, in the field's `description` (no command prints them: read them here,
or take `RunConfig.model_json_schema()`, which carries them, e.g. for an editor's YAML completion). The
example configs in `configs/`, one per method (`tunelab train --help` points there), are validated against
these fields by tests/test_configs.py. Unknown keys are errors
(extra="forbid"); method options nest under the method (a discriminated union on `name`), so an
option of another method fails by structure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tunelab.config.distributed import DistributedConfig, EnergyConfig
from tunelab.config.methods import LoraMethod, MethodConfig, Strict
from tunelab.config.objectives import ObjectiveConfig, SftObjective
from tunelab.config.search import Duration, SearchConfig

BUILTIN_DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelConfig(Strict):
    name: str = Field(
        BUILTIN_DEFAULT_MODEL,
        description="Built-in alias (see `tunelab models`), a local Hugging Face model directory, a hub id, "
        "or a path to a .gguf file.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight/compute dtype. `auto`: bfloat16 where the hardware runs it natively, else float32."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="`auto` picks cuda, then mps, then cpu.")
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto",
        description="Attention kernels. `auto`: flash_attention_2 on a CUDA GPU in bf16/fp16 when flash-attn is "
        "installed, else transformers' default (SDPA where the model has it).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub to run. Off unless you set it.")
    task: Literal["auto", "causal_lm", "sequence_classification", "seq2seq"] = Field(
        "auto",
        description="What the model is trained to do. `auto`: from the model's config (encoder-only such as BERT: "
        "sequence_classification; encoder-decoder such as T5: seq2seq; else causal_lm).",
    )


RowFormat = Literal[
    "auto",
    "prompt_completion",
    "alpaca",
    "chat",
    "text",
    "classification",
    "pairs",
    "openai_preference",
    "kto",
    "prompts",
]


class TrainSource(Strict):
    """One task's training data, when `data.train` lists several (summarization, classification, chat, ...)."""

    path: Path = Field(..., description="The task's file (the formats of `data.train`).")
    name: str | None = Field(None, description="The task's name in reports and metrics. Default: the file's stem.")
    format: RowFormat | None = Field(None, description="The task's row format. Default: data.format.")
    system: str | None = Field(None, description="The task's system prompt. Default: data.system.")
    weight: float | None = Field(
        None,
        gt=0,
        description="The task's share of the training mix, relative to the others' (all sources or none). The mix "
        "keeps the sources' total row count; a task below its share repeats rows, one above it is sampled down. "
        "None: every row once.",
    )

    @property
    def task(self) -> str:
        return self.name or self.path.stem


class DataConfig(Strict):
    train: Path | list[TrainSource] = Field(
        ...,
        description="Training file: .jsonl, .json, .csv, .parquet, or a saved `datasets` dir. Several tasks: a list "
        "of sources, each {path, name?, format?, system?, weight?}.",
    )
    validation: Path | None = Field(None, description="Optional validation file (same formats as `train`).")
    val_size: float | None = Field(
        None,
        description="Hold out this share (0 < x < 1) or this many rows (x >= 1) of `train` for validation, "
        "deterministically from `train.seed`. Not allowed together with `validation`.",
    )
    format: RowFormat = Field(
        "auto",
        description="Row format; `auto` detects it from the fields of the rows. For objective sft: prompt_completion, "
        "alpaca, chat, text, classification. For dpo/orpo: pairs ({prompt, chosen, rejected}) or openai_preference "
        "(OpenAI's preference fine-tuning JSONL); for kto: kto ({prompt, completion, label}) or pairs; for grpo: "
        "prompts ({prompt, reference?, ...}; prompt_completion rows too, the completion as the reference).",
    )
    labels: list[str] | None = Field(
        None, description="Classification label set. Default: the labels seen in the training file."
    )
    system: str | None = Field(None, description="System prompt added to every example that has none.")
    template: str = Field(
        "auto",
        description="How prompts are rendered: `auto` (the model's chat template, else `plain`), `chat_template`, "
        "`plain`, `alpaca`, or a custom Jinja chat template string.",
    )
    replay_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Mix general instruction data into training as this share of the training "
        "rows (mitigates forgetting). 0 = off.",
    )
    replay_data: Path | None = Field(
        None, description="General data for replay (prompt/completion JSONL); default: the built-in set."
    )
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="`error`: stop and list every bad row. `skip`: drop them and report counts per reason."
    )
    max_skip_fraction: float = Field(
        0.05, ge=0, le=1, description="With on_bad_rows=skip, skipping more than this share of rows is an error."
    )
    new_tokens: list[str] | Literal["auto"] | None = Field(
        None,
        description="Domain terms to add to the vocabulary as whole tokens (`tunelab inspect-data` shows the terms "
        "the tokenizer splits into the most pieces). Each term is one word (no spaces) and becomes one token after a "
        "space and one at the start of a line; each new embedding row starts as the mean of the rows of the pieces "
        "it replaces and trains (lora, qlora: those rows only; full: with the rest). `auto`: the words of the "
        "training rows seen 5+ times, split into 3+ pieces, holding a letter and absent from general English text, "
        "the 50 that save the most tokens (tunelab.data.vocabulary). Methods: lora, qlora, full.",
    )

    @field_validator("new_tokens", mode="before")
    @classmethod
    def _new_tokens_list_or_auto(cls, v: object) -> object:
        if isinstance(v, str) and v != "auto":  # one message instead of one per member of the union
            raise ValueError(f"{v!r}: give a list of terms (e.g. [XK-4471, QZ-0937]) or auto")
        return v

    @field_validator("new_tokens")
    @classmethod
    def _new_tokens_are_words(cls, v: list[str] | str | None) -> list[str] | str | None:
        if not isinstance(v, list):
            return v
        for term in v:
            if not term:
                raise ValueError("an entry is empty: each entry is a term (e.g. XK-4471); remove the empty one")
            if any(c.isspace() for c in term):
                raise ValueError(
                    f"entry {term!r} holds whitespace: each entry is one term without spaces (e.g. XK-4471); "
                    "list the words of a phrase separately"
                )
        repeated = sorted({t for t in v if v.count(t) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} listed twice: list each term once")
        return v

    @field_validator("val_size")
    @classmethod
    def _val_size_positive(cls, v: float | None) -> float | None:
        if v is not None and (v <= 0 or (v >= 1 and v != int(v))):
            raise ValueError("must be a share in (0, 1) or a whole number of rows >= 1")
        return v

    @model_validator(mode="after")
    def _one_validation_source(self) -> DataConfig:
        if self.validation is not None and self.val_size is not None:
            raise ValueError("give either `validation` (a file) or `val_size` (a split of train), not both")
        if self.validation is not None and self.several_tasks:
            raise ValueError("with several training sources, use data.val_size: each task holds out its own rows")
        return self

    @field_validator("train")
    @classmethod
    def _sources(cls, v: Path | list[TrainSource]) -> Path | list[TrainSource]:
        if isinstance(v, Path):
            return v
        if not v:
            raise ValueError("an empty list of sources: give a file, or a list of {path, name?, weight?}")
        names = [s.task for s in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"task name {repeated[0]!r} is used twice: give each source its own `name`")
        weighted = [s.weight is not None for s in v]
        if any(weighted) and not all(weighted):
            raise ValueError("give every source a `weight` (its share of the mix), or none (every row once)")
        return v

    def sources(self) -> list[TrainSource]:
        """The training sources: the one file as a source of its own, or the list."""
        return [TrainSource(path=self.train)] if isinstance(self.train, Path) else list(self.train)

    @property
    def several_tasks(self) -> bool:
        return not isinstance(self.train, Path)

    @property
    def train_files(self) -> str:
        """The training file, or the sources' files, for messages."""
        return ", ".join(str(s.path) for s in self.sources())


class TrainConfig(Strict):
    """Training arguments, under their Hugging Face `TrainingArguments` names."""

    output_dir: Path = Field(Path("runs/run"), description="The run directory.")
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="If > 0, stop after this many optimizer steps (overrides epochs).")
    per_device_train_batch_size: int = Field(8, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    logging_dir: Path | None = Field(None, description="TensorBoard event files. Default: <output_dir>/logs.")
    logging_steps: int = Field(10, ge=1)
    eval_strategy: Literal["auto", "no", "steps", "epoch"] = Field(
        "auto", description="`auto`: `epoch` when there is validation data, else `no`."
    )
    eval_steps: int | None = Field(None, ge=1)
    save_strategy: Literal["no", "steps", "epoch"] = "steps"
    save_steps: int = Field(100, ge=1)
    save_total_limit: int | None = Field(3, ge=1)
    load_best_model_at_end: bool = False
    metric_for_best_model: str = "eval_loss"
    greater_is_better: bool | None = Field(None, description="Default: False for losses, True for other metrics.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement of metric_for_best_model."
    )
    seed: int = 42
    max_seq_length: int = Field(1024, ge=8, description="Rows longer than this are bad rows (see data.on_bad_rows).")
    sparse_lm_head: bool = Field(
        True,
        description="Run the LM head and loss on trained (completion) tokens only: the same loss and gradients "
        "for less compute and memory. Models with logit scaling/soft-capping always use their own loss.",
    )
    loss_chunk_tokens: int = Field(
        256,
        ge=1,
        description="With sparse_lm_head, the LM head and its loss run this many trained tokens at a time, so the "
        "logits (tokens x vocabulary floats) are never held whole: at most this many rows of them.",
    )
    activation_checkpointing: Literal["auto", "off", "selective", "full"] = Field(
        "auto",
        description="Recompute activations in the backward pass instead of keeping them (also called gradient "
        "checkpointing). `selective`: keep the matmul and attention outputs, recompute the cheap rest (norms, "
        "activation functions, products): activation memory about halves for little time. `full` (or true): keep "
        "only each layer's input: the least memory, each step costs ~40% more. `off` (or false). `auto`: off when "
        "the run's estimated peak memory (as `tunelab plan` computes it) fits this machine, else selective if "
        "that fits, else full.",
    )
    padding_free: bool | Literal["auto"] = Field(
        "auto",
        description="Lay each batch's rows end to end with no padding, attention kept inside each row: the same "
        "loss and gradients for less compute when row lengths vary. `auto`: on for decoder-only models with SDPA "
        "attention and methods that do not prepend soft prompts (prompt/prefix tuning).",
    )
    overwrite_output_dir: bool = Field(
        False,
        description="Replace a run already in output_dir: its tunelab files are removed first, and a folder holding "
        "files tunelab did not write is refused either way.",
    )
    time_budget: Duration | None = Field(
        None,
        description="Train for at most about this long (e.g. 5m, 1h30m): the planner's time per step on this "
        "machine sets max_steps to the steps that fit (never more than the config asks for).",
    )

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _bare_no(cls, v: object) -> object:
        return "no" if v is False else v  # YAML reads a bare `no` as false; `eval_strategy: no` means "no"

    @field_validator("activation_checkpointing", mode="before")
    @classmethod
    def _checkpointing_bool(cls, v: object) -> object:
        return {True: "full", False: "off"}[v] if isinstance(v, bool) else v  # true/false as before (and YAML's no)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("eval_strategy=steps needs eval_steps (e.g. train.eval_steps=50)")
        if self.load_best_model_at_end and self.save_strategy == "no":
            raise ValueError("load_best_model_at_end needs checkpoints: set save_strategy to steps or epoch")
        return self


class EvalConfig(Strict):
    """How generated answers are scored: by `tunelab eval`/`compare`, and during training when
    `train.metric_for_best_model` names a generation metric."""

    test: Path | list[TrainSource] | None = Field(
        None,
        description="Held-out test file (same formats as data.train) for eval/compare. Several tasks: a list of "
        "sources {path, name?, format?, system?}; a source named like a training task is read as that task.",
    )
    metrics: list[str] = Field(
        ["exact_match"],
        description="Generation metrics: exact_match, json_fields, rouge, rouge1, rouge2, rougeL, "
        "bleu, chrf, accuracy, f1.",
    )
    max_new_tokens: int = Field(256, ge=1, description="Greedy decoding budget per answer.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together (left-padded).")
    bootstrap_resamples: int = Field(1000, ge=0, description="Row resamples for the 95% confidence intervals.")
    during_training: bool = Field(
        False,
        description="Generate and score validation rows at every evaluation during training (always on "
        "when train.metric_for_best_model is a generation metric such as rougeL).",
    )
    during_training_rows: int = Field(
        64, ge=1, description="Validation rows generated at each evaluation during training (a capped subset)."
    )
    few_shot_k: int = Field(
        3,
        ge=0,
        description="`compare`: training examples put before each prompt in the few-shot arm (fewer if "
        "they do not fit the context window).",
    )


class ForgettingConfig(Strict):
    """The retention probe: general-knowledge multiple choice (log-likelihood) and English text (perplexity),
    scored on the base model before training and on the result after."""

    enabled: bool = Field(True, description="Score the retention probe before and after every run.")
    mc: Path | None = Field(None, description="Your own multiple-choice retention set (JSONL); default: built-in.")
    texts: Path | None = Field(None, description="Your own text retention set (JSONL of {text}); default: built-in.")
    max_items: int | None = Field(None, ge=1, description="Score only the first N items of each set (faster).")
    max_drop: float | None = Field(None, ge=0, description="Allowed drop in probe accuracy, in points (e.g. 5).")
    max_perplexity_ratio: float | None = Field(None, gt=1, description="Allowed after/base perplexity ratio.")
    fail: bool = Field(False, description="Exceeding a limit fails the run (default: a warning).")
    at_each_evaluation: bool = Field(
        False,
        description="Also score the probe at every evaluation during training (logged as eval_probe_accuracy "
        "and eval_probe_perplexity; costs one probe scoring per evaluation).",
    )
    l2_to_base: float = Field(
        0.0,
        ge=0,
        description="L2-SP: adds this x the squared distance of the trained weights from the base's to the loss "
        "(weight decay toward the base, not toward zero). lora, qlora, full, freeze; sft only.",
    )
    merge_back: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="After training, move the weights this share of the way back to the base (WiSE-FT): 0.3 keeps "
        "70% of the fine-tune's change. lora, qlora, full, freeze.",
    )


class RunConfig(Strict):
    """A whole fine-tuning run: model → data → method + objective → training → evaluation."""

    model: ModelConfig = ModelConfig()
    data: DataConfig
    method: MethodConfig = Field(default_factory=lambda: LoraMethod(name="lora"))
    objective: ObjectiveConfig = Field(default_factory=SftObjective)
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    forgetting: ForgettingConfig = ForgettingConfig()
    search: SearchConfig = SearchConfig()
    distributed: DistributedConfig = DistributedConfig()
    energy: EnergyConfig = EnergyConfig()

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: object) -> object:
        # `model: smollm2-135m-instruct` is the common case; expand it to `model: {name: ...}`.
        return {"name": v} if isinstance(v, str) else v

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_shorthand(cls, v: object) -> object:
        return {"name": v} if isinstance(v, str) else v  # `objective: dpo`

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, v: object) -> object:
        if isinstance(v, str):
            return {"name": v}
        if isinstance(v, dict) and "name" not in v:
            return {"name": "lora", **v}  # the default method, so `method.r=8` alone works
        return v
