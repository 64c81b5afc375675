"""The one worker thread that runs the model: a continuous-batching loop behind a bounded queue.

Requests arrive from the event loop (`submit`, never blocking it) into a bounded queue; a
full queue refuses at once (`QueueFull`, answered 429 with Retry-After) instead of growing.
Between decode steps the worker takes waiting requests into free rows (those that wait
together are prefilled together, up to a token budget: clients come in bursts,
BatchDecoder.join_many), runs one batched step over everything active, and hands each
request its new text through an asyncio queue on the caller's loop. A request whose client went away is dropped before
the next step, freeing its row at once.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator

from ..errors import TensoraError
from ..models.batching import BatchDecoder, BatchedSequence
from ..models.generation import Completion, SamplingOptions


class QueueFull(TensoraError):
    """The engine's waiting queue is at its bound; the client should retry later."""


class ShuttingDown(TensoraError, RuntimeError):
    """The engine is stopping (or stopped): no request is taken or finished any more."""


@dataclass
class Delta:
    """Text produced since the last delta; `completion` is set on the last one."""

    text: str
    completion: Completion | None = None


class Request:
    """One generation request as the event loop sees it: iterate for deltas, `cancel()` to drop it."""

    def __init__(self, prompt: list[int], options: SamplingOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.prompt, self.options = prompt, options
        self._loop, self._queue = loop, asyncio.Queue()
        self.cancelled = False
        self.sequence: BatchedSequence | None = None

    def cancel(self) -> None:
        """The client is gone: the worker frees this request's row before its next step."""
        self.cancelled = True

    def _put(self, item: Delta | BaseException) -> None:  # called from the worker thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Delta]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.completion is not None:
                return

    async def result(self) -> Completion:
        """Wait for the whole completion."""
        async for delta in self:
            if delta.completion is not None:
                return delta.completion
        raise RuntimeError("generation ended without a completion")


class Engine:
    """Runs `model` in one thread, decoding up to `max_batch` requests together; at most `max_queue` wait.

    Between two decode steps it prefills waiting requests of up to `prefill_tokens` prompt
    tokens together (at least one request): a joint prefill costs about the sum of its
    prompts' (the products are linear in rows past a few), so a larger one gains little
    throughput while every request of it and every running row waits for all of it. With
    32 chats arriving at once, one prefill of them all doubled the median time to first
    token (650 -> 1230 ms on 2 cores); ~256 tokens keep the gain of joint prefills at 8.
    """

    def __init__(self, model: Any, max_batch: int = 8, max_queue: int = 64, prefill_tokens: int = 256) -> None:
        if max_batch < 1 or max_queue < 0 or prefill_tokens < 1:
            raise ValueError(f"max_batch and prefill_tokens must be >= 1 and max_queue >= 0, got {max_batch}, "
                             f"{prefill_tokens}, {max_queue}")
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.prefill_tokens = prefill_tokens
        self._waiting: collections.deque[Request] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.decoder = BatchDecoder(model)
        self.steps = 0  # decode steps run, and the rows they carried: for tests and the benchmark
        self.rows_stepped = 0

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._run, name="tensora-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def waiting(self) -> int:
        return sum(not request.cancelled for request in list(self._waiting))

    @property
    def active(self) -> int:
        return len(self.decoder.active)

    def submit(self, prompt: list[int], options: SamplingOptions) -> Request:
        """Queue a request (from the event loop's thread); QueueFull when `max_queue` already wait."""
        request = Request(prompt, options, asyncio.get_running_loop())
        with self._wake:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:  # those whose clients left wait no more: drop them first
                self._waiting = collections.deque(r for r in self._waiting if not r.cancelled)
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting; retry later")
            self._waiting.append(request)
            self._wake.notify()
        return request

    # -- the worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        running: dict[int, Request] = {}  # id(sequence) -> request
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not running:
                    self._wake.wait()
                if self._stopping:
                    break
                joining, tokens = [], 0
                while self._waiting and len(running) + len(joining) < self.max_batch and (
                        self._waiting[0].cancelled or not joining
                        or tokens + len(self._waiting[0].prompt) <= self.prefill_tokens):
                    request = self._waiting.popleft()
                    if not request.cancelled:  # its client left while it waited: it takes no row
                        joining.append(request)
                        tokens += len(request.prompt)
            try:
                self._join([request for request in joining if not request.cancelled], running)
                for key, request in list(running.items()):
                    if request.cancelled:
                        self.decoder.leave(request.sequence)
                        del running[key]
                if running:
                    self._step(running)
            except Exception as exc:  # never leave a stream hanging: whatever broke, its requests hear of it
                self._fail(running, exc)
        for request in [*running.values(), *self._waiting]:
            request._put(ShuttingDown("the server is shutting down"))

    def _fail(self, running: dict[int, Request], exc: Exception) -> None:
        for request in running.values():
            self.decoder.leave(request.sequence)
            request._put(exc)
        running.clear()

    def _join(self, requests: list[Request], running: dict[int, Request]) -> None:
        if not requests:
            return
        results = self.decoder.join_many([(request.prompt, request.options) for request in requests])
        for request, seq in zip(requests, results):
            if isinstance(seq, Exception):  # this request's fault (or a model error in its group): it fails
                request._put(seq)
                continue
            request.sequence = seq
            self._deliver(request)
            if not seq.finished:
                running[id(seq)] = request

    def _step(self, running: dict[int, Request]) -> None:
        try:
            stepped = self.decoder.step()
        except Exception as exc:  # a failed batched step leaves no row usable: fail them all
            self._fail(running, exc)
            return
        self.steps += 1
        self.rows_stepped += len(stepped)
        for seq in stepped:
            request = running[id(seq)]
            if seq.error:  # its sampling failed: it alone fails, and it has left the decoder
                request._put(seq.error)
            else:
                self._deliver(request)
            if seq.finished:
                del running[id(seq)]

    @staticmethod
    def _deliver(request: Request) -> None:
        seq = request.sequence
        text = seq.pending_text()
        if seq.finished:
            request._put(Delta(text, seq.completion()))
        elif text:
            request._put(Delta(text))
