"""Latency in a report: timed in the driver, one variant after the other once every task is done (a
timing taken while other tasks share the cores would say nothing), each engine warmed up first. The
loop itself is the runner's (`runners/timing.py`); this module turns it into a report's figures."""
from __future__ import annotations

import statistics

import numpy as np

LATENCY_WARMUP = 10              # untimed runs first: the engine here has not run this file yet


def time_runner(runner, image: np.ndarray, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median, p90) milliseconds of single-image inference, timed by the runner itself (LiteRT inside
    its worker, so a process round trip is not counted)."""
    times = runner.time_inference(image, repeats, warmup)
    return statistics.median(times), float(np.percentile(times, 90))


def time_reference(prepared, image: np.ndarray, repeats: int) -> tuple[float, float]:
    """(median, p90) ms of PyTorch eager fp32 (unfused) on one image."""
    from ..runners.torch import TorchRunner

    with TorchRunner(prepared.model, input_shape=prepared.input_shape) as runner:
        return time_runner(runner, image, repeats, warmup=LATENCY_WARMUP)


def time_artifact(target_name: str, artifact, image: np.ndarray,
                  repeats: int) -> tuple[tuple[float | None, float | None], str | None, str]:
    """((median, p90) ms, why there is no latency, the engine) of one file on its target's engine; the
    latency is (None, None) when that engine's timings say nothing about a device."""
    from ..targets import get_target

    with get_target(target_name).runner(artifact) as runner:
        note = runner.latency_unmeasurable
        latency = (None, None) if note else time_runner(runner, image, repeats, warmup=LATENCY_WARMUP)
        return latency, note, runner.engine
