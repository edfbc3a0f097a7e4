"""Dynamic micro-batching: concurrent requests share one model call.

A model call on 32 texts costs little more than one on a single text, so the server queues the
texts of all requests in flight and runs them together: up to ``max_batch`` texts per call (a
bigger request is split over several calls), collected during a short window after the first
text arrives. The call runs in a single worker thread, so the event loop keeps accepting and
answering requests meanwhile, and only one call runs at a time (TensorFlow parallelises inside
it). A failed call fails the requests that had texts in it, and only those; the worker goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["BatcherStats", "MicroBatcher"]

Predict = Callable[[list[str]], list[Any]]


@dataclass
class BatcherStats:
    """Counters since start: how well requests were coalesced."""

    model_calls: int = 0
    texts: int = 0
    largest_batch: int = 0
    failed_calls: int = 0


@dataclass
class _Pending:
    text: str
    future: asyncio.Future


class MicroBatcher:
    """Queue texts from concurrent requests and run them through ``predict`` in batches.

    Use as ``async with MicroBatcher(model.predict) as batcher: await batcher.predict(texts)``,
    inside one running event loop.

    Args:
        predict: a blocking function, ``list[str]`` -> one result per text, in order.
        max_batch: the most texts in one ``predict`` call.
        max_wait_s: how long to wait for more texts once the first one is queued, when fewer
            than ``max_batch`` are waiting; 0 takes what is queued at once.
    """

    def __init__(self, predict: Predict, *, max_batch: int = 32, max_wait_s: float = 0.002):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: list[_Pending] = []

    async def start(self) -> None:
        """Start the worker task in the running event loop."""
        if self._worker is not None:
            raise RuntimeError("the batcher is already running")
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="batcher")

    async def stop(self) -> None:
        """Stop the worker; texts still queued fail with a RuntimeError."""
        if self._worker is None:
            return
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        left = list(self._in_flight)
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        for item in left:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        # A model call still running finishes in its thread; nobody waits for its result.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._worker = self._queue = self._executor = None

    async def __aenter__(self) -> MicroBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def predict(self, texts: Sequence[str]) -> list[Any]:
        """The results for ``texts``, in order, once the batches holding them have run.

        Raises:
            Exception: whatever ``predict`` raised for a batch holding one of these texts.
        """
        if self._worker is None:
            raise RuntimeError("the batcher is not running: use `async with MicroBatcher(...)`")
        loop = asyncio.get_running_loop()
        pending = [_Pending(text, loop.create_future()) for text in texts]
        for item in pending:
            self._queue.put_nowait(item)
        try:
            return list(await asyncio.gather(*(item.future for item in pending)))
        finally:
            for item in pending:  # after a failure or a disconnect: skip the rest unrun
                item.future.cancel()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._in_flight = []  # what stop() fails if it cancels this loop
            batch = await self._next_batch(self._in_flight)
            if not batch:
                continue
            texts = [item.text for item in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._predict, texts)
                if len(results) != len(texts):
                    raise RuntimeError(f"the model gave {len(results)} results for {len(texts)}")
            except Exception as err:
                self.stats.failed_calls += 1
                logger.error("model call on %d text(s) failed: %r", len(texts), err)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            self.stats.model_calls += 1
            self.stats.texts += len(texts)
            self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    async def _next_batch(self, batch: list[_Pending]) -> list[_Pending]:
        """Wait for a text, then take what is queued (up to ``max_batch``) into ``batch``, once
        more after ``max_wait_s`` if it is not full. Texts whose request is gone are dropped."""
        batch.append(await self._queue.get())
        self._take_queued(batch)
        if len(batch) < self.max_batch and self.max_wait_s > 0:
            await asyncio.sleep(self.max_wait_s)
            self._take_queued(batch)
        return [item for item in batch if not item.future.done()]

    def _take_queued(self, batch: list[_Pending]) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                batch.append(item)
