"""Training data for an encoder-decoder model (model.task = seq2seq: T5, BART): prompt in, answer out.

    data = build_for_seq2seq(cfg, tokenizer)   # BuiltData; input_ids/attention_mask (prompt), labels (answer)

Rows are read and checked exactly as for causal LMs; the prompt is rendered as generation renders it
(tunelab.data.templates.encode_prompt), the answer (the final assistant turn) is tokenized alone and ends with
EOS, and every answer token is trained. There is no concatenation: the encoder reads the prompt, the
decoder learns the answer. Sequences longer than train.max_seq_length are truncated (counted in the log).
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from tunelab.config import RunConfig
from tunelab.data.build import BuiltData, DataReport
from tunelab.data.encode import check_tokenizer, template_name
from tunelab.data.messages import Row
from tunelab.data.rows import RowSet, preflight, warn_skipped
from tunelab.data.templates import encode_prompt
from tunelab.errors import DataError

log = logging.getLogger(__name__)


def build_for_seq2seq(cfg: RunConfig, tokenizer: Any, rows: RowSet | None = None) -> BuiltData:
    """`rows`: preflight's, when the caller has them (the files are then not read again)."""
    check_tokenizer(tokenizer, cfg.data)
    rows = rows if rows is not None else preflight(cfg)
    warn_skipped(rows.skipped)
    if rows.format == "text":
        raise DataError(
            f"{cfg.data.train_files}: raw text has no prompt and answer for an encoder-decoder",
            [f"{cfg.data.train_files}: use prompt/completion, alpaca, chat or classification rows"],
        )
    train = encode(tokenizer, rows.train, cfg)
    validation = encode(tokenizer, rows.validation, cfg) if rows.validation else None
    report = DataReport(
        format=rows.format,
        template=template_name(tokenizer, cfg.data.template, rows.format),
        labels=rows.labels,
        rows_read=rows.rows_read,
        rows={"train": len(rows.train), "validation": len(rows.validation)},
        examples={"train": len(train), "validation": len(validation) if validation is not None else 0},
        skipped=rows.skipped,
        replayed=rows.replayed,
    )
    return BuiltData(train, validation, report, rows.validation)


def encode(tokenizer: Any, rows: list[Row], cfg: RunConfig) -> datasets.Dataset:
    limit = cfg.train.max_seq_length
    prompts = [encode_prompt(tokenizer, row.messages[:-1], cfg.data.template, cfg.data.system) for row in rows]
    answers = [
        tokenizer(row.messages[-1]["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for row in rows
    ]
    too_long = sum(len(p) > limit or len(a) > limit for p, a in zip(prompts, answers, strict=True))
    if too_long:
        log.warning("%d row(s) longer than train.max_seq_length=%d tokens were truncated", too_long, limit)
    return datasets.Dataset.from_dict(
        {
            "input_ids": [p[:limit] for p in prompts],
            "attention_mask": [[1] * len(p[:limit]) for p in prompts],
            "labels": [a[:limit] for a in answers],
        }
    )
