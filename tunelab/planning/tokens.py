"""How many tokens a run pushes through the model: per batch (for memory) and per epoch (for time).

    stats = token_stats(cfg, tokenizer)     # from the data's real token lengths
    stats = assumed_stats(cfg, reason)      # when the data cannot be read cheaply: max_seq_length per row

The data is rendered and tokenized as training would (tunelab.data: template, label masks, length
checks) but never padded or loaded into a model; a few hundred rows take well under a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tunelab.config import RunConfig
from tunelab.errors import TunelabError

# Above this the data is not tokenized for the plan (it would take minutes); row lengths are assumed.
READ_LIMIT_BYTES = 50 * 2**20


@dataclass(frozen=True)
class TokenStats:
    rows: int | None  # training rows (None: unknown, the data was not read)
    batch_size: int
    longest_row: int  # tokens; a batch is padded to its longest row
    most_trained_in_row: int  # trained (completion) tokens of the row that has most
    padded_tokens_per_epoch: int | None  # sum over batches of batch size x longest row in it
    real_tokens_per_epoch: int | None  # the rows' own tokens: what a padding-free batch computes
    longest_batch_tokens: int  # the longest rows of one batch laid end to end (padding-free worst case)
    trained_tokens_per_epoch: int | None
    steps_per_epoch: int | None  # optimizer steps (gradient accumulation included)
    source: str  # "data" or why lengths were assumed

    @property
    def peak_batch_tokens(self) -> int:
        """The biggest batch a run can meet: every row as long as the longest."""
        return self.batch_size * self.longest_row

    @property
    def peak_trained_tokens(self) -> int:
        return self.batch_size * self.most_trained_in_row


def token_stats(cfg: RunConfig, tokenizer: Any) -> TokenStats:
    """Real lengths of the training rows that would be kept; assumed ones if the data cannot be read."""
    from tunelab.data.build import encode_checked

    size = sum(s.path.stat().st_size for s in cfg.data.sources() if s.path.is_file())
    if size > READ_LIMIT_BYTES:
        return assumed_stats(cfg, f"{cfg.data.train_files}: {size / 2**20:.0f} MB; not tokenized for the plan")
    try:
        kept = encode_checked(cfg, tokenizer).kept["train"]
    except (TunelabError, OSError) as err:
        return assumed_stats(cfg, f"data not read ({str(err).splitlines()[0]})")
    if not kept:
        return assumed_stats(cfg, "no training row fits train.max_seq_length")
    lengths = [len(e.input_ids) for e in kept]
    trained = [sum(e.trained) for e in kept]
    return from_lengths(lengths, trained, cfg.train.per_device_train_batch_size, cfg)


def from_lengths(lengths: list[int], trained: list[int], batch_size: int, cfg: RunConfig) -> TokenStats:
    """Batches as the trainer draws them (shuffled with the run's seed), padded to their longest row or not."""
    order = list(range(len(lengths)))
    random.Random(cfg.train.seed).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    accumulation = cfg.train.gradient_accumulation_steps
    return TokenStats(
        rows=len(lengths),
        batch_size=batch_size,
        longest_row=max(lengths),
        most_trained_in_row=max(trained),
        padded_tokens_per_epoch=sum(len(b) * max(lengths[i] for i in b) for b in batches),
        real_tokens_per_epoch=sum(lengths),
        longest_batch_tokens=sum(sorted(lengths)[-batch_size:]),  # any shuffle may put them together
        trained_tokens_per_epoch=sum(trained),
        steps_per_epoch=max(1, len(batches) // accumulation),
        source="data",
    )


def assumed_stats(cfg: RunConfig, reason: str) -> TokenStats:
    """Every row max_seq_length tokens long and every token trained: an upper bound, rows unknown."""
    n = cfg.train.max_seq_length
    return TokenStats(
        rows=None,
        batch_size=cfg.train.per_device_train_batch_size,
        longest_row=n,
        most_trained_in_row=n,
        padded_tokens_per_epoch=None,
        real_tokens_per_epoch=None,
        longest_batch_tokens=cfg.train.per_device_train_batch_size * n,
        trained_tokens_per_epoch=None,
        steps_per_epoch=None,
        source=f"{reason}; assumed {n} tokens per row (train.max_seq_length)",
    )
