"""One base model in memory, every adapter on it, and one worker thread that owns them.

    engine = load_engine(["runs/tickets", "runs/summaries"])   # names: the base, "tickets", "summaries"
    job = Job("tickets", "Where is my refund?", Decoding(max_new_tokens=32))
    engine.submit(job); text = job.future.result()
    engine.close()

Every model call runs on the worker, so switching adapters (`Loaded.use`) never races a generation. The worker
takes whatever is queued, groups the jobs by decoding (and by adapter, unless the adapters' method serves one
adapter per row: peft's mixed-adapter batches for LoRA) and decodes each group with ONE batched `generate` call,
streamed and non-streamed requests alike, so concurrent requests share the forward passes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tunelab import artifacts, methods
from tunelab.data.templates import encode_prompt
from tunelab.errors import ConfigError, TunelabError
from tunelab.inference.generation import Decoding, PerRow, Prompt, generate_encoded
from tunelab.inference.loading import Loaded, LoadOptions, load_for_inference, load_runs, run_config

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@dataclass(frozen=True)
class Target:
    """What a model name in a request means: an adapter to activate (None: the base, or the only model)."""

    name: str
    adapter: str | None
    template: str
    system: str | None


@dataclass
class Job:
    """One request. The answer's text arrives in `future`; a streamed job also gets `emit(piece)` per piece of
    text, then `emit(None)` (an exception is emitted as itself). A row ends early once its text holds one of
    `stops` or `cancel` is set (its client went away)."""

    model: str
    prompt: Prompt
    decoding: Decoding
    stops: tuple[str, ...] = ()
    emit: Callable[[str | BaseException | None], None] | None = None
    future: Future = field(default_factory=Future)
    cancel: threading.Event = field(default_factory=threading.Event)


class _Rows:
    """The jobs of one batch as `generate_encoded` sees them: pieces go to streamed jobs, and a row is finished
    once its client left or its text so far holds one of its stop sequences."""

    def __init__(self, batch: list[Job]):
        self.batch = batch
        self.text = [""] * len(batch)
        self.sent = [0] * len(batch)

    def on_piece(self, row: int, text: str) -> None:
        self.text[row] += text
        if (emit := self.batch[row].emit) is not None:
            emit(text)
            self.sent[row] += 1

    def finished(self, row: int) -> bool:
        job = self.batch[row]
        return job.cancel.is_set() or any(stop in self.text[row] for stop in job.stops)


class QueueFullError(Exception):
    """More jobs are waiting than the server takes: the client should retry later."""


class Engine:
    def __init__(
        self,
        loaded: Loaded,
        targets: dict[str, Target],
        max_queue: int = 256,
        max_batch: int = 16,
        mixed: bool = False,
        batch_window_s: float = 0.0,
    ):
        self.loaded, self.targets, self.max_batch, self.batch_window_s = loaded, targets, max_batch, batch_window_s
        # Different adapters may share a batch (one adapter per row); otherwise a batch is one model's.
        self.mixed = mixed
        self.batch_sizes: Counter[int] = Counter()  # how many requests each batched generate call served
        self.models_per_batch: Counter[int] = Counter()  # how many different models (adapters) each one served
        # (pieces sent, stopped by its cancel event) for the latest streamed jobs: a client that went away stops
        # the generation at the next piece, which this shows.
        self.streams: deque[tuple[int, bool]] = deque(maxlen=64)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._loop, name="tunelab-serving", daemon=True)

    def start(self) -> Engine:
        self._worker.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._worker.join(timeout=10)

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting") from None

    def context_window(self) -> int:
        config = getattr(self.loaded.model, "config", None)
        window = getattr(config, "max_position_embeddings", None)
        return int(window or getattr(self.loaded.tokenizer, "model_max_length", 2048))

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            jobs = self._gather(first)
            for batch in self._batches([job for job in jobs if job is not None]):
                self._run_batch(batch)
            if None in jobs:
                return

    def _gather(self, first: Job) -> list[Job | None]:
        """`first` and what else is queued or arrives within the batch window (up to 4 batches' worth)."""
        jobs: list[Job | None] = [first]
        deadline = time.monotonic() + self.batch_window_s
        with contextlib.suppress(queue.Empty):
            while len(jobs) < 4 * self.max_batch and jobs[-1] is not None:
                wait = deadline - time.monotonic()
                jobs.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
        return jobs

    def _batches(self, jobs: list[Job]) -> Iterator[list[Job]]:
        """Jobs that can share one `generate` call, at most max_batch at a time, in arrival order."""

        def key(job: Job) -> tuple[Decoding, str | None]:
            return job.decoding, None if self.mixed else job.model

        for shared in dict.fromkeys(map(key, jobs)):
            group = [job for job in jobs if key(job) == shared]
            for start in range(0, len(group), self.max_batch):
                yield group[start : start + self.max_batch]

    def _run_batch(self, batch: list[Job]) -> None:
        targets = [self.targets[job.model] for job in batch]
        tokenizer, rows = self.loaded.tokenizer, _Rows(batch)
        try:
            ids = [
                encode_prompt(tokenizer, j.prompt, t.template, t.system) for j, t in zip(batch, targets, strict=True)
            ]
            with self._placed(targets) as adapter_names:
                per_row = PerRow(rows.on_piece, rows.finished, adapter_names)
                texts = generate_encoded(self.loaded.model, tokenizer, ids, batch[0].decoding, per_row)
        except Exception as exc:  # handed to each waiting request; the worker keeps serving
            for job in batch:
                job.future.set_exception(exc)
                if job.emit is not None:
                    job.emit(exc)
            return
        self.batch_sizes[len(batch)] += 1
        self.models_per_batch[len({t.name for t in targets})] += 1
        for row, (job, text) in enumerate(zip(batch, texts, strict=True)):
            job.future.set_result(text)
            if job.emit is not None:
                self.streams.append((rows.sent[row], job.cancel.is_set()))
                job.emit(None)

    @contextlib.contextmanager
    def _placed(self, targets: list[Target]) -> Iterator[list[str] | None]:
        """One target: its adapter active (every adapter off for the base). Several (a mixed batch): each row's
        adapter by name, for peft's `adapter_names`."""
        if len({t.name for t in targets}) > 1:
            yield [t.adapter or BASE_ROW for t in targets]
        elif not self.loaded.adapters:
            yield None
        elif targets[0].adapter is None:
            with methods.get(self.loaded.method).disable(self.loaded.model):
                yield None
        else:
            self.loaded.use(targets[0].adapter)
            yield None


def load_engine(refs: list[str], placement: LoadOptions | None = None, **engine_options: Any) -> Engine:
    """Adapter runs: their shared base once, each adapter on it, named like `load_runs` names them, and the base
    by its model name. Otherwise one model or run, named as given. `placement`: device, dtype, trust_remote_code."""
    placement = placement or LoadOptions()
    allow_mixed = engine_options.pop("mixed", True)
    where = {"device": placement.device, "dtype": placement.dtype, "trust_remote_code": placement.trust_remote_code}
    if all(artifacts.looks_like_run(r) for r in refs) and all(_is_adapter_run(r) for r in refs):
        loaded = load_runs(refs, **where)
        base = run_config(refs[0], placement.trust_remote_code)[1].model.name
        targets = {base: Target(base, None, "auto", None)}
        for name, (template, system) in loaded.adapters.items():
            if name in targets:
                raise ConfigError(f"adapter name {name!r} is also the base model's name", ["set method.adapter_name"])
            targets[name] = Target(name, name, template, system)
        return Engine(loaded, targets, mixed=loaded.mixed_batches and allow_mixed, **engine_options)
    if len(refs) > 1:
        raise ConfigError("several models need adapter runs of one base", [f"got: {', '.join(refs)}"])
    loaded = load_for_inference(refs[0], **where)
    name = refs[0].rstrip("/")
    return Engine(loaded, {name: Target(name, None, loaded.template, loaded.system)}, **engine_options)


def _is_adapter_run(ref: str) -> bool:
    try:
        return artifacts.open_run(ref).artifact_kind == "adapter"
    except TunelabError:  # an incomplete run: load_for_inference reports it properly
        return False
