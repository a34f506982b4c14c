"""One base model in memory, every adapter on it, and one worker thread that owns them.

    engine = load_engine(["runs/tickets", "runs/summaries"])   # names: the base, "tickets", "summaries"
    future = engine.submit(Job("tickets", "Where is my refund?", Decoding(max_new_tokens=32)))
    engine.close()

Every model call runs on the worker, so switching adapters (`Loaded.use`) never races a generation. The worker
takes whatever is queued, groups the jobs by (model, decoding) and decodes each group with ONE batched `generate`
call, so concurrent requests for the same adapter share the forward passes. A streamed job runs alone.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tunelab import artifacts, methods
from tunelab.errors import ConfigError, TunelabError
from tunelab.inference.generation import Decoding, Prompt, generate, stream
from tunelab.inference.loading import Loaded, load_for_inference, load_runs, run_config


@dataclass(frozen=True)
class Target:
    """What a model name in a request means: an adapter to activate (None: the base, or the only model)."""

    name: str
    adapter: str | None
    template: str
    system: str | None


@dataclass
class Job:
    model: str
    prompt: Prompt
    decoding: Decoding
    future: Future = field(default_factory=Future)


@dataclass
class StreamJob:
    """`emit(piece)` per text piece, then `emit(None)`; an exception is emitted as itself. `cancel` stops it."""

    model: str
    prompt: Prompt
    decoding: Decoding
    emit: Callable[[str | BaseException | None], None]
    cancel: threading.Event = field(default_factory=threading.Event)


class QueueFullError(Exception):
    """More jobs are waiting than the server takes: the client should retry later."""


class Engine:
    def __init__(self, loaded: Loaded, targets: dict[str, Target], max_queue: int = 256, max_batch: int = 16):
        self.loaded, self.targets, self.max_batch = loaded, targets, max_batch
        self.batch_sizes: Counter[int] = Counter()  # how many requests each batched generate call served
        # (pieces sent, stopped by its cancel event) for the latest streamed jobs: a client that went away stops
        # the generation at the next piece, which this shows.
        self.streams: deque[tuple[int, bool]] = deque(maxlen=64)
        self._queue: queue.Queue[Job | StreamJob | None] = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._loop, name="tunelab-serving", daemon=True)

    def start(self) -> Engine:
        self._worker.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._worker.join(timeout=10)

    def submit(self, job: Job | StreamJob) -> None:
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
            jobs = [first, *self._drain()]
            for job in jobs:
                if isinstance(job, StreamJob):
                    self._run_stream(job)
            batched = [job for job in jobs if isinstance(job, Job)]
            for key in dict.fromkeys((job.model, job.decoding) for job in batched):
                group = [job for job in batched if (job.model, job.decoding) == key]
                for start in range(0, len(group), self.max_batch):
                    self._run_group(group[start : start + self.max_batch])
            if None in jobs:
                return

    def _drain(self) -> list[Job | StreamJob | None]:
        jobs: list[Job | StreamJob | None] = []
        with contextlib.suppress(queue.Empty):
            while len(jobs) < 4 * self.max_batch:
                jobs.append(self._queue.get_nowait())
        return jobs

    def _run_group(self, group: list[Job]) -> None:
        target = self.targets[group[0].model]
        try:
            with self._activated(target):
                texts = generate(
                    self.loaded.model,
                    self.loaded.tokenizer,
                    [job.prompt for job in group],
                    group[0].decoding,
                    batch_size=len(group),
                    template=target.template,
                    system=target.system,
                )
        except Exception as exc:  # handed to each waiting request; the worker keeps serving
            for job in group:
                job.future.set_exception(exc)
            return
        self.batch_sizes[len(group)] += 1
        for job, text in zip(group, texts, strict=True):
            job.future.set_result(text)

    def _run_stream(self, job: StreamJob) -> None:
        target = self.targets[job.model]
        try:
            with self._activated(target):
                pieces = stream(
                    self.loaded.model,
                    self.loaded.tokenizer,
                    job.prompt,
                    job.decoding,
                    template=target.template,
                    system=target.system,
                )
                sent = 0
                with contextlib.closing(pieces):
                    for piece in pieces:
                        if job.cancel.is_set():
                            break
                        job.emit(piece)
                        sent += 1
        except Exception as exc:
            job.emit(exc)
            return
        self.streams.append((sent, job.cancel.is_set()))
        job.emit(None)

    @contextlib.contextmanager
    def _activated(self, target: Target) -> Iterator[None]:
        """The target's adapter active, or every adapter switched off for the base."""
        if not self.loaded.adapters:
            yield
        elif target.adapter is None:
            with methods.get(self.loaded.method).disable(self.loaded.model):
                yield
        else:
            self.loaded.use(target.adapter)
            yield


def load_engine(refs: list[str], trust_remote_code: bool = False, **engine_options: Any) -> Engine:
    """Adapter runs: their shared base once, each adapter on it, named like `load_runs` names them, and the base
    by its model name. Otherwise one model or run, named as given."""
    if all(artifacts.looks_like_run(r) for r in refs) and all(_is_adapter_run(r) for r in refs):
        loaded = load_runs(refs, trust_remote_code=trust_remote_code)
        base = run_config(refs[0], trust_remote_code)[1].model.name
        targets = {base: Target(base, None, "auto", None)}
        for name, (template, system) in loaded.adapters.items():
            if name in targets:
                raise ConfigError(f"adapter name {name!r} is also the base model's name", ["set method.adapter_name"])
            targets[name] = Target(name, name, template, system)
        return Engine(loaded, targets, **engine_options)
    if len(refs) > 1:
        raise ConfigError("several models need adapter runs of one base", [f"got: {', '.join(refs)}"])
    loaded = load_for_inference(refs[0], trust_remote_code=trust_remote_code)
    name = refs[0].rstrip("/")
    return Engine(loaded, {name: Target(name, None, loaded.template, loaded.system)}, **engine_options)


def _is_adapter_run(ref: str) -> bool:
    try:
        return artifacts.open_run(ref).artifact_kind == "adapter"
    except TunelabError:  # an incomplete run: load_for_inference reports it properly
        return False
