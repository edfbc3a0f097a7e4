"""Order-preserving parallel map with bounded memory, for streaming stages."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple = (),
    in_flight_per_worker: int = 2,
    threads: bool = False,
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in input order, computed by ``workers`` workers.

    Unlike ``Pool.imap``, which reads its whole input ahead of the workers, at most
    ``workers * in_flight_per_worker`` items are pending at once, so memory stays constant
    on inputs of any size. Workers are processes, or threads with ``threads=True`` (for work
    that releases the GIL, such as sentencepiece's encoding). With ``workers <= 1`` everything
    runs in the calling thread.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return

    if threads:
        pool: cf.Executor = cf.ThreadPoolExecutor(
            max_workers=workers, initializer=initializer, initargs=initargs
        )
    else:
        # fork keeps start-up cheap on Linux; spawn elsewhere (functions must be importable).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=initializer,
            initargs=initargs,
        )
    max_pending = workers * in_flight_per_worker
    with pool:
        pending: collections.deque[cf.Future] = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= max_pending:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
