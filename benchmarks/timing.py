"""The timing loop the benchmarks share: interleaved rounds, best time per candidate."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_times(
    candidates: dict[str, Callable[[], object]],
    reps: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Minimum seconds of each candidate over ``reps`` interleaved rounds, after one warm-up
    round. Interleaving spreads machine noise over all candidates alike; ``sync`` waits for
    queued device work (e.g. ``torch.cuda.synchronize``) around each timed call."""
    best = dict.fromkeys(candidates, float("inf"))
    for rep in range(reps + 1):
        for name, run in candidates.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            if rep:
                best[name] = min(best[name], time.perf_counter() - start)
    return best
