"""One timing loop for every latency figure: in a runner, inside a worker process, in a benchmark.

Standard library only, so a worker process (numpy and the standard library at its top level, also
under an emulated interpreter) times its engine with the same loop as the parent.
"""
from __future__ import annotations

import time
from typing import Callable


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 0) -> list[float]:
    """Milliseconds of each of `repeats` calls of `fn()`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times
