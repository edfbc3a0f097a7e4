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
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in input order, computed by ``workers`` processes.

    Unlike ``Pool.imap``, which reads its whole input ahead of the workers, at most
    ``workers * in_flight_per_worker`` items are pending at once, so memory stays constant
    on inputs of any size. With ``workers <= 1`` everything runs in this process.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return

    # fork keeps start-up cheap on Linux; spawn elsewhere (functions must be importable).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    max_pending = workers * in_flight_per_worker
    with cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs
    ) as pool:
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
