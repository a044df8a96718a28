"""`mvdeploy report`: convert (or reuse) every (target, precision), measure each on the evaluation
images, and analyse int8 layer by layer. Rendering lives in `mobilevit_deploy.reports`."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..calibration import calibration_for
from ..data import LoadedImages, load_folder
from ..errors import DataError, InvalidValueError
from ..outputs import ensure_folder
from ..parity import parity_path
from ..pipeline import PreparedModel, artifact_name, parity_inputs
from ..runners.torch import TorchRunner
from ..spec import Calibration, Precision
from ..targets import get_target
from ..versions import tool_versions  # noqa: F401  (re-exported: reports record the tools)
from .cells import CellResult, analyze_layers, convert_cell, evaluate_shard, reference_shard, reused_cell
from .evaluate import VariantResult, accuracy, evaluate_logits, time_runner
from .layers import LayerAnalysis


@dataclass
class ModelReport:
    model: str
    weights: str
    image_size: int
    eval_source: str
    eval_images: int
    eval_skipped: int
    calib_source: str | None
    calib_images: int
    torch_accuracy: float | None
    torch_latency_ms: tuple[float, float]        # median, p90 of PyTorch eager fp32 (unfused)
    rows: list[VariantResult] = field(default_factory=list)
    layers: LayerAnalysis | None = None
    failures: list[str] = field(default_factory=list)   # conversions that did not produce a file

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "image_size": self.image_size,
                "eval": {"source": self.eval_source, "images": self.eval_images, "skipped_unreadable": self.eval_skipped},
                "calibration": {"source": self.calib_source, "images": self.calib_images},
                "torch_fp32": {"accuracy": self.torch_accuracy, "latency_ms_median": self.torch_latency_ms[0],
                               "latency_ms_p90": self.torch_latency_ms[1]},
                "rows": [r.to_dict() for r in self.rows],
                "int8_layers": self.layers.to_dict() if self.layers else None,
                "failures": self.failures}


@dataclass
class Report:
    command: str
    tools: dict
    models: list[ModelReport]
    executor: dict | None = None     # where the tasks ran (`scale.*Executor.describe()`), with the shard size

    def to_dict(self) -> dict:
        return {"command": self.command, "tools": self.tools, "executor": self.executor,
                "models": [m.to_dict() for m in self.models]}


ACCURACY_BOUND_PT = 0.5          # a variant to ship loses at most this many top-1 points against PyTorch fp32


@dataclass(frozen=True)
class Recommendation:
    """The variant to ship for one model: the fastest measured file within the accuracy bound."""

    model: str
    row: VariantResult
    latency_ratio: float | None      # latency / the same target's fp32 latency
    size_ratio: float | None

    def line(self) -> str:
        r = self.row
        ratios = ", ".join(part for part in (
            f"{self.latency_ratio:.2f}x the latency" if self.latency_ratio is not None else None,
            f"{self.size_ratio:.2f}x the size" if self.size_ratio is not None else None) if part)
        accuracy = "" if r.accuracy_delta is None else f", {r.accuracy_delta:+.2f} pt top-1"
        return (f"{self.model}: ship {r.target} {r.precision} ({r.size_bytes / 1e6:.2f} MB, "
                f"{r.latency_ms_median:.2f} ms{accuracy}; {ratios} of {r.target} fp32)")


def recommend(model: "ModelReport", bound_pt: float = ACCURACY_BOUND_PT) -> Recommendation | None:
    """The fastest timed variant whose parity passed and whose accuracy is within `bound_pt` of PyTorch."""
    fit = [r for r in model.rows if r.latency_ms_median is not None and r.parity_passed
           and (r.accuracy_delta is None or r.accuracy_delta >= -bound_pt)]
    if not fit:
        return None
    best = min(fit, key=lambda r: r.latency_ms_median)
    fp32 = next((r for r in model.rows if r.target == best.target and r.precision == "fp32"
                 and r.latency_ms_median), None)
    return Recommendation(model.model, best, best.latency_ms_median / fp32.latency_ms_median if fp32 else None,
                          best.size_ratio)


def evaluation_images(prepared: PreparedModel, eval_data: Path | None, limit: int | None) -> LoadedImages:
    """--eval-data (an ImageFolder), or the reference checkpoint's own test split."""
    if eval_data is not None:
        return load_folder(Path(eval_data), prepared.preprocess, count=limit, progress="reading evaluation images")
    if prepared.reference is not None:
        return prepared.reference.read("test", prepared.preprocess, limit)
    raise DataError(f"{prepared.name} has no reference data: pass --eval-data DIR (an ImageFolder tree)")


def _reusable(path: Path, prepared: PreparedModel) -> bool:
    """An artifact from an earlier run of the same weights whose parity check passed."""
    report = parity_path(path)
    if not (path.exists() and report.exists()):
        return False
    facts = json.loads(report.read_text())
    return facts.get("passed") is True and facts.get("weights") == prepared.weights


TIMING_WARMUP = 10               # untimed runs first: the engine here has not run this file yet
DEFAULT_SHARD_SIZE = 256         # evaluation images per task: small enough to spread, large enough to amortise a load


def shards(count: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering `count` images in order, `size` at a time."""
    if size < 1:
        raise InvalidValueError(f"--shard-size must be at least 1; got {size}")
    return [(start, min(start + size, count)) for start in range(0, count, size)]


@dataclass
class _Cell:
    """One (model, target, precision) on its way through the executor."""

    target: str
    precision: Precision
    handle: object                          # the conversion task, or the reused artifact put in the store
    reused: bool                            # an earlier run's checked file, already in the report's folder
    result: CellResult | None = None
    error: str | None = None                # why it has no row (conversion, or evaluation of a shard)
    logits: dict = field(default_factory=dict)


@dataclass
class _Job:
    """Everything one model's part of the report needs and collects."""

    prepared: PreparedModel
    out_dir: Path
    images: np.ndarray
    labels: np.ndarray
    report: ModelReport
    reference_logits: dict = field(default_factory=dict)
    reference_error: str | None = None
    cells: list[_Cell] = field(default_factory=list)
    layers: object = None                                 # the per-layer analysis task
    calibration: Calibration | None = None


def measure_model(prepared: PreparedModel, targets: list[str], precisions: list[Precision], out_dir: Path,
                  eval_data: Path | None = None, calib_data: str | None = None, calib_samples: int = 200,
                  eval_limit: int | None = None, repeats: int = 30, layer_images: int = 16, reuse: bool = True,
                  on_step=lambda text: None, **scale) -> ModelReport:
    """One model's report, its artifacts in `out_dir` (see `measure_models` for `scale`)."""
    return measure_models([(prepared, out_dir)], targets, precisions, eval_data=eval_data, calib_data=calib_data,
                          calib_samples=calib_samples, eval_limit=eval_limit, repeats=repeats,
                          layer_images=layer_images, reuse=reuse, on_step=on_step, **scale)[0]


def measure_models(models: list[tuple[PreparedModel, Path]], targets: list[str], precisions: list[Precision], *,
                   eval_data: Path | None = None, calib_data: str | None = None, calib_samples: int = 200,
                   eval_limit: int | None = None, repeats: int = 30, layer_images: int = 16, reuse: bool = True,
                   executor=None, shard_size: int = DEFAULT_SHARD_SIZE, artifact_store: Path | None = None,
                   on_step=lambda text: None, on_progress=lambda done, total: None) -> list[ModelReport]:
    """Every (model, target, precision) cell: convert (or reuse) it, evaluate it shard by shard, time it.

    The cells, the shards and the int8 per-layer analyses are tasks of `executor` (in this process
    unless one is given, see `mobilevit_deploy.scale`); each (model, artifact) gets its shards' logits
    back in order, so every figure is the one a single process computes. Latency is timed here, one
    variant after the other once the tasks are done, so that no other task shares the cores with it.
    A cell whose conversion or evaluation fails is listed in the model's `failures` with its error line;
    the others complete. `artifact_store`: a folder every worker and this process reach (else files
    travel as bytes)."""
    from ..scale import InProcessExecutor

    shards(0, shard_size)                                  # refuse a bad size before any work
    executor = executor or InProcessExecutor()
    local = isinstance(executor, InProcessExecutor)
    jobs = [_prepare_job(p, out, targets, precisions, eval_data, calib_data, calib_samples, eval_limit)
            for p, out in models]
    tasks: list[tuple[object, Callable]] = []              # (handle, what to do with its outcome)

    def add(handle, keep) -> None:
        tasks.append((handle, keep))

    for job in jobs:
        p = job.prepared
        model = executor.put(p)
        images = [executor.put(job.images[a:b]) for a, b in shards(len(job.images), shard_size)]
        for i, shard in enumerate(images):
            add(executor.submit(reference_shard, model, shard), _keep(job.reference_logits, i, job, "reference"))
        calibration = executor.put(job.calibration) if job.calibration is not None else None
        parity = executor.put(parity_inputs(p, None, synthetic=8, real=0))
        store = (job.out_dir if local else
                 None if artifact_store is None else Path(artifact_store) / p.name)
        for target_name in targets:
            target = get_target(target_name)
            for precision in precisions:
                if precision not in target.precisions:
                    continue
                path = job.out_dir / artifact_name(p.name, precision, target, None)
                reused = reuse and _reusable(path, p)
                if reused:
                    handle = executor.put(reused_cell(path, target_name, precision, job.out_dir, store))
                else:
                    handle = executor.submit(convert_cell, model, target_name, precision,
                                             calibration if target.needs_calibration(precision) else None,
                                             parity, None if store is None else str(store))
                cell = _Cell(target_name, precision, handle, reused)
                job.cells.append(cell)
                add(handle, _keep_cell(cell, job))
                for i, shard in enumerate(images):
                    add(executor.submit(evaluate_shard, handle, shard, executor.threads), _keep(cell.logits, i, cell))
        if job.calibration is not None and any(x is Precision.int8 for x in precisions) and "tflite" in targets:
            calib = [x for batch in job.calibration.batches for x in batch][:64]
            chosen = list(torch.from_numpy(job.images[:layer_images]))
            job.layers = executor.submit(analyze_layers, model, calib, chosen)
            add(job.layers, _keep_layers(job))

    kept = {handle: keep for handle, keep in tasks}
    total = len(tasks) + sum(1 + len(job.cells) for job in jobs)        # + one timing per variant
    on_step("converting and evaluating")
    for done, (handle, outcome) in enumerate(executor.completed([h for h, _ in tasks]), 1):
        kept[handle](outcome)
        on_progress(done, total)
    done = len(tasks)
    for job in jobs:
        on_step(f"{job.prepared.name}: timing, one variant after the other")
        done = _finish(job, repeats, done, total, on_progress)
    return [job.report for job in jobs]


def _prepare_job(prepared: PreparedModel, out_dir: Path, targets, precisions, eval_data, calib_data,
                 calib_samples, eval_limit) -> _Job:
    evaluation = evaluation_images(prepared, eval_data, eval_limit)
    report = ModelReport(prepared.name, prepared.weights, prepared.image_size, evaluation.source,
                         len(evaluation.images), evaluation.skipped, None, 0, None, (0.0, 0.0))
    job = _Job(prepared, Path(out_dir), evaluation.images.numpy(), evaluation.labels.numpy(), report)
    if any(get_target(t).needs_calibration(p) for t in targets for p in precisions):
        job.calibration = calibration_for(prepared, calib_data, eval_data, calib_samples, progress=True)
        report.calib_source, report.calib_images = job.calibration.source, job.calibration.samples
    ensure_folder(job.out_dir)
    return job


def _keep(into: dict, index: int, owner, what: str = ""):
    """Store a shard's logits at its index; a failed shard marks its owner (a cell or the reference)."""
    from ..scale import Failed

    def keep(outcome) -> None:
        if isinstance(outcome, Failed):
            if what == "reference":
                owner.reference_error = owner.reference_error or outcome.error
            elif owner.error is None:                # a failed conversion already says why
                owner.error = f"evaluation failed (shard {index + 1}): {outcome.error}"
            return
        into[index] = outcome
    return keep


def _keep_cell(cell: _Cell, job: _Job):
    from ..scale import Failed

    def keep(outcome) -> None:
        if isinstance(outcome, Failed):
            cell.error = f"conversion failed: {outcome.error}"
            return
        cell.result = outcome
        if not cell.reused:
            outcome.shipped.place(job.out_dir)      # the report's folder holds every file it measured
    return keep


def _keep_layers(job: _Job):
    from ..scale import Failed

    def keep(outcome) -> None:
        if isinstance(outcome, Failed):
            job.report.failures.append(f"int8 per-layer error: {outcome.error}")
        else:
            job.report.layers = outcome
    return keep


def _gathered(parts: dict) -> np.ndarray:
    """Shard logits in image order."""
    return np.concatenate([parts[i] for i in sorted(parts)]) if parts else np.zeros((0, 0), np.float32)


def _finish(job: _Job, repeats: int, done: int, total: int, on_progress) -> int:
    """Figures from the gathered logits; latency timed here, one variant after the other."""
    p, report = job.prepared, job.report
    labels = job.labels
    with TorchRunner(p.model, input_shape=p.input_shape) as runner:
        report.torch_latency_ms = time_runner(runner, job.images[:1], repeats, warmup=TIMING_WARMUP)
    done += 1
    on_progress(done, total)
    reference = None
    if job.reference_error is None:
        reference = _gathered(job.reference_logits)
        report.torch_accuracy = accuracy(reference, labels)
    fp32_size: dict[str, int] = {}
    for cell in job.cells:
        done += 1
        cell_name = f"{cell.target} {cell.precision.value}"
        if cell.error is None and reference is None:
            cell.error = f"not evaluated: the PyTorch reference failed: {job.reference_error}"
        if cell.error is not None:
            report.failures.append(f"{cell_name}: {cell.error}")
            on_progress(done, total)
            continue
        target = get_target(cell.target)
        artifact = replace(cell.result.artifact, path=job.out_dir / cell.result.shipped.relpath)
        if cell.precision is Precision.fp32:
            fp32_size[cell.target] = artifact.size_bytes
        with target.runner(artifact) as runner:
            note = runner.latency_unmeasurable
            latency = (None, None) if note else time_runner(runner, job.images[:1], repeats, warmup=TIMING_WARMUP)
            engine = runner.engine
        logits = _gathered(cell.logits)
        figures = evaluate_logits(logits, labels, reference, report.torch_accuracy)
        size = artifact.size_bytes
        base = fp32_size.get(cell.target)
        report.rows.append(VariantResult(
            p.name, cell.target, cell.precision.value, str(artifact.path), engine, size,
            size / base if base else None, latency[0], latency[1], note,
            parity_passed=cell.result.parity_passed, notes=list(cell.result.notes), **figures))
        on_progress(done, total)
    return done
