"""Training data for an encoder classifier (model.task = sequence_classification): text in, label id out.

    data = build_for_classifier(cfg, tokenizer)   # BuiltData; columns input_ids, attention_mask, labels (int)

Rows are read and checked exactly as for generative training (classification format {text, label}, same
errors); the encoder reads the text itself, not a rendered prompt. Texts longer than train.max_seq_length
are truncated (standard for classifiers; the count is reported).
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from tunelab.config import RunConfig
from tunelab.data.build import BuiltData, DataReport
from tunelab.data.formats.classification import label_of
from tunelab.data.messages import Row
from tunelab.data.rows import RowSet, preflight, warn_skipped
from tunelab.errors import DataError
from tunelab.models.modes import eval_mode

log = logging.getLogger(__name__)


def build_for_classifier(cfg: RunConfig, tokenizer: Any, rows: RowSet | None = None) -> BuiltData:
    """`rows`: preflight's, when the caller has them (the files are then not read again)."""
    if cfg.data.replay_fraction:
        raise DataError("data.replay_fraction mixes in generative rows", ["set it to 0 for a classifier"])
    rows = rows if rows is not None else preflight(cfg)
    warn_skipped(rows.skipped)
    if rows.format != "classification":
        raise DataError(
            f"{cfg.data.train_files}: an encoder classifier trains on classification rows, got {rows.format}",
            [f"{cfg.data.train_files}: rows of {{text, label}} (data.format=classification), or a generative model"],
        )
    labels = list(rows.labels or [])
    train = encode(tokenizer, rows.train, labels, cfg.train.max_seq_length)
    validation = encode(tokenizer, rows.validation, labels, cfg.train.max_seq_length) if rows.validation else None
    report = DataReport(
        format=rows.format,
        template="none (the encoder reads the text)",
        labels=labels,
        rows_read=rows.rows_read,
        rows={"train": len(rows.train), "validation": len(rows.validation)},
        examples={"train": len(train), "validation": len(validation) if validation is not None else 0},
        skipped=rows.skipped,
    )
    return BuiltData(train, validation, report, rows.validation)


def encode(tokenizer: Any, rows: list[Row], labels: list[str], max_length: int) -> datasets.Dataset:
    texts = [row.fields["text"] for row in rows]
    full = tokenizer(texts)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    if truncated:
        log.warning("%d text(s) longer than train.max_seq_length=%d tokens were truncated", truncated, max_length)
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    index = {label: i for i, label in enumerate(labels)}
    return datasets.Dataset.from_dict(
        {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": [index[label_of(row.fields)] for row in rows],
        }
    )


def classify(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 32) -> list[str]:
    """The predicted label of each text (argmax of the head), by the model's own id2label."""
    import torch

    names = model.config.id2label
    out: list[str] = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], truncation=True, padding=True, return_tensors="pt")
            logits = model(**enc.to(model.device)).logits
            out += [names[int(i)] for i in logits.argmax(-1)]
    return out
