"""Build the Hugging Face `Trainer` and its callbacks from the config.

The config's `train` section uses Hugging Face's own argument names; this module maps it onto
`TrainingArguments`, adds our callbacks (live progress, TensorBoard in `logging_dir`, checkpoint
completion markers, early stopping); `TunelabTrainer` checks the loss of every step and computes it
on trained positions only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.integrations import TensorBoardCallback

from tunelab import artifacts, methods
from tunelab.artifacts import RunDir
from tunelab.config.schema import RunConfig, TrainConfig
from tunelab.errors import ConfigError, TrainingDivergedError
from tunelab.evaluation import during_training, forgetting
from tunelab.models.tasks import CAUSAL_LM, CLASSIFIER, SEQ2SEQ, model_task
from tunelab.training import activation_checkpointing, distributed, padding_free
from tunelab.training.anchor import BaseAnchor
from tunelab.training.loss import supports_sparse_head, trained_positions_loss
from tunelab.training.progress import LiveProgress


class FiniteLoss:
    """The loss of every step is checked: NaN or infinity stops the run naming the step. Trainer's own
    `logging_nan_inf_filter` hides such losses from the logs and goes on training, which ends in a
    finished-looking model of garbage. A mixin: TRL's trainers (tunelab.training.preference) take it too."""

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            raise TrainingDivergedError(
                f"training stopped: the loss became {loss.item()} at step {step}. Nothing was saved as final. "
                "Try a lower train.learning_rate, a max_grad_norm (e.g. 1.0), or float32 (model.dtype=float32)."
            )
        return loss


class TunelabTrainer(FiniteLoss, Trainer):
    """Trainer with these changes, all by overriding documented extension points (one level deep):

    - the loss of every step is checked (FiniteLoss).
    - with `sparse_head`, the training loss runs the LM head on trained positions only, `loss_chunk_tokens` of
      them at a time (tunelab.training.loss).
    - with `packed`, batches come padding-free (tunelab.training.padding_free) and `attention()` gives the
      attention they need; the caller runs train/evaluate inside it.
    - evaluations add the configured extra metrics (generation, retention probe).
    - with an `anchor`, the training loss adds the weights' squared distance from the base (L2-SP).
    """

    def __init__(
        self,
        *args: Any,
        sparse_head: bool = False,
        loss_chunk_tokens: int = 256,
        packed: bool = False,
        extra_evals: tuple = (),
        anchor: BaseAnchor | None = None,
        anchor_weight: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.anchor = anchor  # forgetting.l2_to_base: the loss adds anchor_weight x the distance from the base
        self.anchor_weight = anchor_weight
        self.sparse_head = sparse_head
        self.loss_chunk_tokens = loss_chunk_tokens
        self.packed = packed
        self.extra_evals = extra_evals  # functions model -> {name: value}, run at every evaluation
        if sparse_head:
            # Our loss is divided by the trained tokens of the whole accumulated batch, as transformers' own.
            self.loss_is_scaled_for_ga = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.task_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.anchor is None or not model.training:
            return loss
        # forgetting.l2_to_base, once per optimizer step over its micro-batches: a share of it in each, unless
        # Trainer.training_step divides the whole loss by the accumulation steps itself.
        # The model itself, not Trainer's DDP wrapper (whose parameter names gain a `module.` prefix).
        penalty = self.anchor_weight * self.anchor.squared_distance(self.accelerator.unwrap_model(model))
        if not self.trainer_divides_loss(num_items_in_batch):
            penalty = penalty / self.current_gradient_accumulation_steps
        return (loss[0] + penalty, *loss[1:]) if return_outputs else loss + penalty

    def trainer_divides_loss(self, num_items_in_batch) -> bool:
        """Whether Trainer.training_step divides compute_loss's result by the accumulation steps (transformers 5:
        unless the loss was already normalized by the batch's token count, by us, the model or compute_loss_func)."""
        if self.loss_is_scaled_for_ga is not None:
            return not self.loss_is_scaled_for_ga
        by_tokens = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        return not (by_tokens or self.compute_loss_func is not None)

    def task_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.sparse_head or return_outputs or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if num_items_in_batch is None:
            trained = (inputs["labels"][:, 1:] != -100).sum()
            num_items_in_batch = trained * self.current_gradient_accumulation_steps
        loss = trained_positions_loss(model, inputs, num_items_in_batch, self.loss_chunk_tokens)
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does for token averaging
        return loss

    def attention(self) -> contextlib.AbstractContextManager:
        """The attention training and evaluation run under: row by row for padding-free batches."""
        return padding_free.attention(self.model) if self.packed else contextlib.nullcontext()

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The loss evaluation, plus the extra evaluations when configured: generation metrics
        (tunelab.evaluation.during_training) and the retention probe (forgetting.at_each_evaluation).
        Added here, before Trainer logs them and runs the callbacks, so best-checkpoint selection and early
        stopping see them like eval_loss."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for extra in self.extra_evals:
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in extra(self.model).items()})
        return output


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete once Trainer has written all of it (on_save runs after the save), in every
    process: each writes its own part (its RNG state; under FSDP its shard), so the main one marks after all."""

    def on_save(self, args, state, control, **kwargs):
        distributed.barrier()
        if state.is_world_process_zero:
            artifacts.mark_checkpoint_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}")


def eval_strategy(cfg: TrainConfig, has_validation: bool) -> str:
    if cfg.eval_strategy == "auto":
        return "epoch" if has_validation else "no"
    return cfg.eval_strategy


def training_arguments(cfg: RunConfig, run_dir: RunDir, device, dtype, has_val: bool, model) -> TrainingArguments:
    return TrainingArguments(**argument_values(cfg, run_dir, device, dtype, has_val, model))


def argument_values(
    cfg: RunConfig, run_dir: RunDir, device: torch.device, dtype: torch.dtype, has_val: bool, model
) -> dict[str, Any]:
    """`TrainingArguments` values from the config; TRL's configs (its subclasses) take them as they are. The
    `distributed` ones (DDP timeout, FSDP, DeepSpeed) act only when a launcher started several processes."""
    t = cfg.train
    evaluating = eval_strategy(t, has_val)
    return dict(
        output_dir=str(run_dir.checkpoints),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of the total steps in transformers 5
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        eval_strategy=evaluating,
        eval_steps=t.eval_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=t.load_best_model_at_end,
        metric_for_best_model=t.metric_for_best_model if evaluating != "no" else None,
        greater_is_better=greater_is_better(t),
        seed=t.seed,
        use_cpu=device.type == "cpu",
        # Mixed precision: trainable weights stay fp32, matmuls run in the compute dtype.
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        report_to="none",  # TensorBoard is added below with our logging_dir
        disable_tqdm=True,  # LiveProgress replaces the default bar: it shows the live loss too
        dataloader_num_workers=0,
        # tunelab.training.activation_checkpointing turns it on in the model (selective checkpointing's policy is a
        # function, and TrainingArguments must serialize to JSON).
        activation_checkpointing=False,
        **distributed.training_arguments(cfg, model),
    )


def collator(model, tokenizer, packed: bool = False):
    if packed:
        return padding_free.collator()
    if model_task(model) == CLASSIFIER:
        return DataCollatorWithPadding(tokenizer)  # labels are one class id per row
    # Right-pads input_ids with the pad id and labels with -100, so padding is never trained; for an
    # encoder-decoder it also builds the decoder inputs from the labels.
    seq2seq = model_task(model) == SEQ2SEQ
    return DataCollatorForSeq2Seq(tokenizer, model=model if seq2seq else None, padding=True, label_pad_token_id=-100)


def use_padding_free(cfg: TrainConfig, model, method: methods.MethodSpec) -> bool:
    """`auto` packs whenever the model and method allow it; `true` where they do not is an error."""
    reason = None
    if model_task(model) != CAUSAL_LM:
        reason = "only decoder-only language models train padding-free"
    elif not method.padding_free:
        reason = f"{method.name} prepends soft-prompt tokens to every row, which needs padded rows"
    elif not padding_free.supports(model):
        reason = "the model's attention is neither flash attention nor SDPA through transformers' AttentionInterface"
    if cfg.padding_free is True and reason:
        raise ConfigError(f"train.padding_free: true, but {reason}. Fix: set train.padding_free: auto (or false).")
    return cfg.padding_free is not False and reason is None


def use_sparse_head(cfg: RunConfig, model, method: methods.MethodSpec) -> bool:
    """The LM head on trained positions only: one process only. It runs the decoder and the head itself, past
    the DDP/FSDP wrapper, which would then neither synchronize gradients nor gather shards; several processes
    use the model's own loss (full logits: more memory, the same loss)."""
    wanted = cfg.train.sparse_lm_head and method.sparse_head and supports_sparse_head(model)
    return wanted and not distributed.world().several


def classifier_metrics(labels: list[str]):
    """Trainer's compute_metrics for a classifier: accuracy and macro-F1 (our metric registry) on label names."""
    from tunelab.evaluation.predict import score

    def compute(prediction) -> dict[str, float]:
        predicted = [labels[i] for i in prediction.predictions.argmax(-1)]
        references = [labels[i] for i in prediction.label_ids]
        scores = score(predicted, references, ["accuracy", "f1"])
        return {k: v for k, v in scores.items() if k in ("accuracy", "f1")}

    return compute


def extra_evaluations(cfg: RunConfig, tokenizer, data, probe) -> tuple:
    """What runs at each evaluation besides the loss: generation metrics, the retention probe."""
    generation = during_training.evaluator(cfg, tokenizer, data.validation_rows)
    retention = (
        forgetting.evaluator(tokenizer, probe) if probe is not None and cfg.forgetting.at_each_evaluation else None
    )
    return tuple(e for e in (generation, retention) if e is not None)


def greater_is_better(t: TrainConfig) -> bool | None:
    """Transformers' default (lower is better only for names ending in "loss") gets perplexity wrong."""
    if t.greater_is_better is None and "perplexity" in t.metric_for_best_model:
        return False
    return t.greater_is_better


def logging_dir(cfg: RunConfig, run_dir: RunDir) -> Path:
    return cfg.train.logging_dir or run_dir.path / "logs"


def build(
    cfg: RunConfig,
    model,
    tokenizer,
    data,
    run_dir: RunDir,
    device,
    dtype,
    checkpointing: str,
    callbacks=(),
    probe=None,
    anchor: BaseAnchor | None = None,
) -> Trainer:
    """The trainer for this run: model, data (BuiltData), collator, arguments, callbacks, extra evaluations.
    `checkpointing` (off, selective, full) is decided above, by the planner (tunelab.planning.checkpointing_mode)."""
    activation_checkpointing.enable(model, checkpointing)
    args = training_arguments(cfg, run_dir, device, dtype, data.validation is not None, model)
    classifier = model_task(model) == CLASSIFIER
    method = methods.get(cfg.method.name)
    packed = use_padding_free(cfg.train, model, method)
    trainer = TunelabTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collator(model, tokenizer, packed),
        processing_class=tokenizer,
        callbacks=[*standard_callbacks(cfg, run_dir), *callbacks],
        compute_metrics=classifier_metrics(data.report.labels) if classifier else None,
        sparse_head=use_sparse_head(cfg, model, method),
        loss_chunk_tokens=cfg.train.loss_chunk_tokens,
        packed=packed,
        extra_evals=() if classifier else extra_evaluations(cfg, tokenizer, data, probe),
        anchor=anchor if cfg.forgetting.l2_to_base else None,
        anchor_weight=cfg.forgetting.l2_to_base,
    )
    trainer.remove_callback(PrinterCallback)  # LiveProgress prints the logs
    return trainer


def standard_callbacks(cfg: RunConfig, run_dir: RunDir) -> list[TrainerCallback]:
    """Every run's callbacks: checkpoint markers, live progress, TensorBoard, early stopping when configured."""
    from torch.utils.tensorboard import SummaryWriter

    callbacks: list[TrainerCallback] = [CheckpointMarker()]
    if distributed.world().is_main:  # one progress bar, one set of TensorBoard logs
        callbacks += [LiveProgress(), TensorBoardCallback(SummaryWriter(log_dir=str(logging_dir(cfg, run_dir))))]
    if cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    return callbacks
