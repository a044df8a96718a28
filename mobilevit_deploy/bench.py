"""`mvdeploy bench FILE...`: latency of exported files measured in one interleaved run.

The machine is shared and noisy, so files are never timed one after the other: every file's runner is
opened first, then rounds go round-robin over the files (a few timed inferences each per round), so a
burst of load from elsewhere touches every file alike. Reported: median, p10 and p90 of single-image
latency, and each median's ratio to the first file's.
"""
from __future__ import annotations

import statistics
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import at_least

# Standard library only at the top: the CLI reads these defaults when it starts.
DEFAULT_THREADS = 2              # engine threads (LiteRT, onnxruntime)
DEFAULT_ROUNDS = 10              # round-robin rounds over the files
DEFAULT_PER_ROUND = 5            # timed single-image runs per file per round


@dataclass
class BenchRow:
    file: str
    target: str
    precision: str
    size_bytes: int
    engine: str
    median_ms: float | None
    p10_ms: float | None
    p90_ms: float | None
    ratio: float | None           # median / the first file's median
    runs: int
    note: str | None = None       # why no latency (e.g. Core ML on Linux runs a reference interpreter)

    def to_dict(self) -> dict:
        return asdict(self)


def bench(paths: list[Path], num_threads: int = DEFAULT_THREADS, rounds: int = DEFAULT_ROUNDS,
          per_round: int = DEFAULT_PER_ROUND, warmup: int = 3, progress=lambda done, total: None) -> list[BenchRow]:
    """Time every file on its own engine, interleaved; the first file is the baseline of the ratios."""
    import numpy as np

    from .targets import load_artifact

    at_least(len(paths), 1, "the number of files")
    at_least(num_threads, 1, "--threads")
    at_least(rounds, 1, "--rounds")
    at_least(per_round, 1, "--repeats")
    loaded = [(Path(path), *load_artifact(path)) for path in paths]
    times: list[list[float]] = [[] for _ in loaded]
    with ExitStack() as stack:
        runners = [stack.enter_context(target.runner(artifact, num_threads=num_threads))
                   for _, target, artifact in loaded]
        images = [np.random.default_rng(0).standard_normal(r.input_shape).astype(np.float32) for r in runners]
        measurable = [r.latency_unmeasurable is None for r in runners]
        for runner, image, ok in zip(runners, images, measurable):
            if ok:
                runner.time_inference(image, 0, warmup)              # warm up every engine before timing
        total = rounds * sum(measurable)
        done = 0
        for _ in range(rounds):
            for i, (runner, image, ok) in enumerate(zip(runners, images, measurable)):
                if ok:
                    times[i] += runner.time_inference(image, per_round, 0)
                    done += 1
                    progress(done, total)
        engines = [r.engine for r in runners]
        notes = [r.latency_unmeasurable for r in runners]
    rows = []
    for (path, target, artifact), t, engine, note in zip(loaded, times, engines, notes):
        median = statistics.median(t) if t else None
        rows.append(BenchRow(str(path), target.name, artifact.precision.value, artifact.size_bytes, engine, median,
                             float(np.percentile(t, 10)) if t else None, float(np.percentile(t, 90)) if t else None,
                             None, len(t), note))
    base = rows[0].median_ms
    for row in rows:
        row.ratio = row.median_ms / base if row.median_ms is not None and base else None
    return rows
