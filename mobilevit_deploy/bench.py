"""`mvdeploy bench FILE...`: latency of exported files measured in one interleaved run.

The machine is shared and noisy, so files are never timed one after the other: every file's runner is
opened first, then rounds go round-robin over the files (a few timed inferences each per round), so a
burst of load from elsewhere touches every file alike. Engines must not disturb each other: every runner
releases the cores when it is idle (onnxruntime without spinning threads), and each file's turn begins with
one untimed inference after the switch. A built-in control times the first file again at the end of every
round: when its two timings disagree by more than its own spread, the run says the machine was disturbed.
Reported: median, p10 and p90 of single-image latency, each median's ratio to the first file's, the
control, and the host (`host.py`) with the thread count.
"""
from __future__ import annotations

import statistics
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import at_least
from .host import Host, host

# Standard library only at the top: the CLI reads these defaults when it starts.
DEFAULT_THREADS = 2              # engine threads (LiteRT, onnxruntime)
DEFAULT_ROUNDS = 10              # round-robin rounds over the files
DEFAULT_PER_ROUND = 5            # timed single-image runs per file per round
SETTLE = 1                       # untimed inferences at the start of each turn: the engine's first after a switch
CONTROL_FLOOR = 0.05             # the control's two medians may always differ this much


@dataclass
class Control:
    """The first file timed at the start and at the end of every round (medians, ms)."""
    start_ms: float
    end_ms: float
    spread: float                 # the first file's (p90 - p10) / median
    disagreement: float           # |end - start| / min(start, end)

    @property
    def disturbed(self) -> bool:
        return self.disagreement > max(self.spread, CONTROL_FLOOR)

    def describe(self) -> str:
        verdict = "the machine was disturbed: compare these ratios with care" if self.disturbed else "agree"
        return (f"control: the first file at the start and end of each round {self.start_ms:.2f} / "
                f"{self.end_ms:.2f} ms ({self.disagreement:.1%} apart, spread {self.spread:.1%}): {verdict}")

    def to_dict(self) -> dict:
        return {**asdict(self), "disturbed": self.disturbed}


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


@dataclass
class BenchRun:
    rows: list[BenchRow]
    control: Control | None       # None when the first file has no latency
    host: Host
    threads: int

    def to_dict(self) -> dict:
        return {"threads": self.threads, "host": self.host.to_dict(),
                "control": self.control.to_dict() if self.control else None,
                "files": [r.to_dict() for r in self.rows]}


def bench(paths: list[Path], num_threads: int = DEFAULT_THREADS, rounds: int = DEFAULT_ROUNDS,
          per_round: int = DEFAULT_PER_ROUND, warmup: int = 3, progress=lambda done, total: None) -> BenchRun:
    """Time every file on its own engine, interleaved; the first file is the baseline of the ratios."""
    import numpy as np

    from .targets import load_artifact

    at_least(len(paths), 1, "the number of files")
    at_least(num_threads, 1, "--threads")
    at_least(rounds, 1, "--rounds")
    at_least(per_round, 1, "--repeats")
    loaded = [(Path(path), *load_artifact(path)) for path in paths]
    times: list[list[float]] = [[] for _ in loaded]
    control: list[float] = []
    with ExitStack() as stack:
        runners = [stack.enter_context(target.runner(artifact, num_threads=num_threads))
                   for _, target, artifact in loaded]
        images = [np.random.default_rng(0).standard_normal(r.input_shape).astype(np.float32) for r in runners]
        timed = [i for i, r in enumerate(runners) if r.latency_unmeasurable is None]
        for i in timed:
            runners[i].time_inference(images[i], 0, warmup)          # warm up every engine before timing
        total = rounds * len(timed)
        done = 0
        for _ in range(rounds):
            for i in timed:
                times[i] += runners[i].time_inference(images[i], per_round, SETTLE)
                done += 1
                progress(done, total)
            if timed and timed[0] == 0:                               # the control: the first file again
                control += runners[0].time_inference(images[0], per_round, SETTLE)
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
    return BenchRun(rows, _control(rows[0], times[0], control), host(), num_threads)


def _control(first: BenchRow, start: list[float], end: list[float]) -> Control | None:
    if not start or not end:
        return None
    a, b = statistics.median(start), statistics.median(end)
    return Control(a, b, (first.p90_ms - first.p10_ms) / first.median_ms, abs(b - a) / min(a, b))
