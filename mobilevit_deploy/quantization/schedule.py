"""How a report's work is scheduled: every (model, target, precision) cell converted (or reused), every
artifact and the PyTorch reference evaluated shard by shard, the int8 per-layer analysis, all as tasks
of one executor (`mobilevit_deploy/scale.py`); then the figures, with latency timed here one variant
after the other (`latency.py`). The report's data is `report.py`; rendering is `mobilevit_deploy.reports`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..calibration import DEFAULT_SAMPLES, calibration_for
from ..errors import InvalidValueError
from ..outputs import ensure_folder
from ..pipeline import PreparedModel, artifact_name, parity_inputs
from ..spec import Calibration, Precision
from ..targets import get_target
from .cells import CellResult, analyze_file, analyze_layers, convert_cell, evaluate_shard, reference_shard, reusable, reused_cell
from .evaluate import VariantResult, accuracy, evaluate_logits, evaluation_images
from .report import ModelReport
from .request import DEFAULT_REPEATS, DEFAULT_SHARD_SIZE
from .latency import time_artifact, time_reference


UNQUANTIZED = (Precision.fp32, Precision.fp16)     # every other precision's file gets its own per-layer table


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
    layers: object = None                   # a quantized file's own per-layer noise (report.FileLayers)
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
                  eval_data: Path | None = None, calib_data: str | None = None, calib_samples: int = DEFAULT_SAMPLES,
                  eval_limit: int | None = None, repeats: int = DEFAULT_REPEATS, layer_images: int = 16, reuse: bool = True,
                  on_step=lambda text: None, **scale) -> ModelReport:
    """One model's report, its artifacts in `out_dir` (see `measure_models` for `scale`)."""
    return measure_models([(prepared, out_dir)], targets, precisions, eval_data=eval_data, calib_data=calib_data,
                          calib_samples=calib_samples, eval_limit=eval_limit, repeats=repeats,
                          layer_images=layer_images, reuse=reuse, on_step=on_step, **scale)[0]


def measure_models(models: list[tuple[PreparedModel, Path]], targets: list[str], precisions: list[Precision], *,
                   eval_data: Path | None = None, calib_data: str | None = None, calib_samples: int = DEFAULT_SAMPLES,
                   eval_limit: int | None = None, repeats: int = DEFAULT_REPEATS, layer_images: int = 16, reuse: bool = True,
                   executor=None, shard_size: int = DEFAULT_SHARD_SIZE, artifact_store: Path | None = None,
                   on_step=lambda text: None, on_progress=lambda done, total: None,
                   arm_cpus: tuple = ()) -> list[ModelReport]:
    """Every (model, target, precision) cell: convert (or reuse) it, evaluate it shard by shard, time it.

    The cells, the shards and the int8 per-layer analyses are tasks of `executor` (in this process
    unless one is given, see `mobilevit_deploy.scale`); each (model, artifact) gets its shards' logits
    back in order, so every figure is the one a single process computes. Latency is timed here, one
    variant after the other once the tasks are done, so that no other task shares the cores with it.
    A cell whose conversion or evaluation fails is listed in the model's `failures` with its error line;
    the others complete. `artifact_store`: a folder every worker and this process reach (else files
    travel as bytes). `arm_cpus`: each cell of a target that runs on ARM64 is also checked there."""
    from ..scale import InProcessExecutor

    shards(0, shard_size)                                  # refuse a bad size before any work
    executor = executor or InProcessExecutor()
    local = isinstance(executor, InProcessExecutor)
    jobs = [_new_job(p, out, targets, precisions, eval_data, calib_data, calib_samples, eval_limit)
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
                arm = () if target.arm64_unsupported else tuple(arm_cpus)
                reused = reuse and reusable(path, p.weights, arm)
                if reused:
                    handle = executor.put(reused_cell(path, target_name, precision, job.out_dir, store))
                else:
                    handle = executor.submit(convert_cell, model, target_name, precision,
                                             calibration if target.needs_calibration(precision) else None,
                                             parity, None if store is None else str(store), arm)
                cell = _Cell(target_name, precision, handle, reused)
                job.cells.append(cell)
                add(handle, _keep_cell(cell, job))
                for i, shard in enumerate(images):
                    add(executor.submit(evaluate_shard, handle, shard, executor.threads), _keep(cell.logits, i, cell))
                if precision not in UNQUANTIZED:
                    add(executor.submit(analyze_file, model, handle), _keep_file_layers(cell, job))
        # the per-layer analysis: under the first int8 target that declares the quantizer it uses
        analyzer = next((t for t in targets if get_target(t).layer_quantizer is not None
                         and Precision.int8 in get_target(t).precisions), None)
        if job.calibration is not None and Precision.int8 in precisions and analyzer is not None:
            calib = [x for batch in job.calibration.batches for x in batch][:64]
            chosen = list(torch.from_numpy(job.images[:layer_images]))
            job.layers = executor.submit(analyze_layers, model, analyzer, calib, chosen)
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


def _new_job(prepared: PreparedModel, out_dir: Path, targets, precisions, eval_data, calib_data,
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
            outcome.parcel.place(job.out_dir)      # the report's folder holds every file it measured
    return keep


def _keep_file_layers(cell: _Cell, job: _Job):
    from ..scale import Failed

    def keep(outcome) -> None:
        if isinstance(outcome, Failed):
            job.report.failures.append(f"{cell.target} {cell.precision.value} per-layer noise: {outcome.error}")
        else:
            cell.layers = outcome
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
    report.torch_latency_ms = time_reference(p, job.images[:1], repeats)
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
        artifact = replace(cell.result.artifact, path=job.out_dir / cell.result.parcel.relpath)
        if cell.precision is Precision.fp32:
            fp32_size[cell.target] = artifact.size_bytes
        latency, note, engine = time_artifact(cell.target, artifact, job.images[:1], repeats)
        logits = _gathered(cell.logits)
        figures = evaluate_logits(logits, labels, reference, report.torch_accuracy)
        size = artifact.size_bytes
        base = fp32_size.get(cell.target)
        if cell.layers is not None:
            report.file_layers.append(cell.layers)
        report.rows.append(VariantResult(
            p.name, cell.target, cell.precision.value, str(artifact.path), engine, size,
            size / base if base else None, latency[0], latency[1], note,
            parity_passed=cell.result.parity_passed, notes=list(cell.result.notes),
            arm64=[_arm64_figures(row) for row in cell.result.arm64], **figures))
        on_progress(done, total)
    return done


def _arm64_figures(row: dict) -> dict:
    """What the report keeps of a parity check's ARM64 row."""
    m, host = row.get("metrics") or {}, row.get("vs_host") or {}
    return {"profile": row["profile"], "max_rel": m.get("max_rel"), "cosine_min": m.get("cosine_min"),
            "top1_agreement": m.get("top1_agreement"), "vs_host_max_rel": host.get("max_rel"),
            "passed": not row["failures"], "engine": row.get("engine")}
