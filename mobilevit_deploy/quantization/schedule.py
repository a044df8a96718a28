"""How a report's work is scheduled: every (model, target, precision) cell converted (or reused), every
artifact and the PyTorch reference evaluated shard by shard, the int8 per-layer analysis, all as tasks
of one executor (`mobilevit_deploy/scale.py`); then the figures, with latency timed here one variant
after the other (`latency.py`). The report's data is `report.py`; rendering is `mobilevit_deploy.reports`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..calibration import DEFAULT_SAMPLES, calibration_for
from ..data import synthetic_images
from ..outputs import ensure_folder
from ..pipeline import PreparedModel, artifact_name, parity_inputs
from ..spec import Calibration, Precision
from ..targets import get_target
from .cells import CellResult, ShardLogits, analyze_file, analyze_layers, convert_cell, evaluate_shard, reference_shard, reusable, reused_cell
from .evaluate import EvaluationSet, VariantResult, accuracy, evaluate_logits, evaluation_set, shards
from .report import ModelReport
from .request import DEFAULT_REPEATS, DEFAULT_SHARD_SIZE
from .latency import time_artifact, time_reference


UNQUANTIZED = (Precision.fp32, Precision.fp16)     # every other precision's file gets its own per-layer table
# The first evaluation images, decoded by the driver: the per-layer int8 analysis runs on them and latency
# is timed on the first readable one.
HEAD_IMAGES = 16


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
    logits: dict = field(default_factory=dict)    # shard index -> ShardLogits


@dataclass
class _Fallback:
    """One int8 file converted again with one of its noisiest layers kept float (`--fallbacks`)."""

    of: _Cell                               # the file it comes from
    layer: dict                             # that file's per-layer row of the layer kept float
    handle: object = None
    result: CellResult | None = None
    error: str | None = None
    logits: dict = field(default_factory=dict)    # shard index -> ShardLogits


@dataclass
class _Job:
    """Everything one model's part of the report needs and collects."""

    prepared: PreparedModel
    out_dir: Path
    evaluation: EvaluationSet               # the images by reference; tasks decode their own shards
    head: np.ndarray                        # the first readable images of it, decoded here [n, 3, H, W]
    report: ModelReport
    reference_logits: dict = field(default_factory=dict)      # shard index -> ShardLogits
    reference_error: str | None = None
    cells: list[_Cell] = field(default_factory=list)
    fallbacks: list[_Fallback] = field(default_factory=list)
    layers: object = None                                 # the per-layer analysis task
    calibration: Calibration | None = None
    handles: dict = field(default_factory=dict)           # the executor's handles of the model, calibration,
                                                          # parity images and shards, for the fallbacks' wave


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
                   on_images=lambda done, total: None, arm_cpus: tuple = (), fallbacks: int = 0) -> list[ModelReport]:
    """Every (model, target, precision) cell: convert (or reuse) it, evaluate it shard by shard, time it.

    The cells, the shards and the int8 per-layer analyses are tasks of `executor` (in this process
    unless one is given, see `mobilevit_deploy.scale`); each (model, artifact) gets its shards' logits
    back in order, so every figure is the one a single process computes. Latency is timed here, one
    variant after the other once the tasks are done, so that no other task shares the cores with it.
    A cell whose conversion or evaluation fails is listed in the model's `failures` with its error line;
    the others complete. `artifact_store`: a folder every worker and this process reach (else files
    travel as bytes). `arm_cpus`: each cell of a target that runs on ARM64 is also checked there.

    The evaluation images travel as references (`evaluation.py`): each shard task reads, decodes and
    preprocesses its own, so this process holds the shard definitions and the returned logits, never the
    pixels. `on_images(done, total)`: images evaluated so far, over the reference and every file; the
    executor's `tally` gets the count and the seconds the tasks took. `fallbacks`: then, in a second wave,
    each int8 file whose target keeps layers float is converted again once per one of its `fallbacks`
    noisiest layers (by its own per-layer table), each kept float alone, and evaluated the same way."""
    from ..scale import InProcessExecutor

    shards(0, shard_size)                                  # refuse a bad size before any work
    executor = executor or InProcessExecutor()
    local = isinstance(executor, InProcessExecutor)
    jobs = [_new_job(p, out, targets, precisions, eval_data, calib_data, calib_samples, eval_limit, layer_images)
            for p, out in models]

    def store_of(job: _Job) -> Path | None:
        """Where a task puts the files it converts: the report's folder here, else --artifact-store or nowhere
        (the file travels as bytes)."""
        return job.out_dir if local else None if artifact_store is None else Path(artifact_store) / job.prepared.name
    tasks: list[tuple[object, Callable, int]] = []         # (handle, what to do with its outcome, its images)

    def add(handle, keep, images: int = 0) -> None:
        tasks.append((handle, keep, images))

    for job in jobs:
        p = job.prepared
        model = executor.put(p)
        cut = job.evaluation.cut(shard_size)
        job.report.eval_shards = len(cut)
        images = [(executor.put(shard), len(shard)) for shard in cut]
        for i, (shard, count) in enumerate(images):
            add(executor.submit(reference_shard, model, shard), _keep(job.reference_logits, i, job, "reference"), count)
        calibration = executor.put(job.calibration) if job.calibration is not None else None
        parity = executor.put(parity_inputs(p, None, synthetic=8, real=0))
        job.handles = {"model": model, "calibration": calibration, "parity": parity, "shards": images}
        store = store_of(job)
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
                add(handle, _keep_conversion(cell, None if reused else job.out_dir))
                for i, (shard, count) in enumerate(images):
                    add(executor.submit(evaluate_shard, handle, shard, p.preprocess, executor.threads),
                        _keep(cell.logits, i, cell), count)
                if precision not in UNQUANTIZED:
                    add(executor.submit(analyze_file, model, handle), _keep_file_layers(cell, job))
        # the per-layer analysis: under the first int8 target that declares the quantizer it uses
        analyzer = next((t for t in targets if get_target(t).layer_quantizer is not None
                         and Precision.int8 in get_target(t).precisions), None)
        if job.calibration is not None and Precision.int8 in precisions and analyzer is not None:
            calib = [x for batch in job.calibration.batches for x in batch][:64]
            chosen = list(torch.from_numpy(job.head[:layer_images]))
            job.layers = executor.submit(analyze_layers, model, analyzer, calib, chosen)
            add(job.layers, _keep_layers(job))

    timings = sum(1 + len(job.cells) for job in jobs)                  # one timing per variant, at the end
    on_step("converting and evaluating")
    total = len(tasks) + timings
    done = _run_wave(executor, tasks, 0, total, on_progress, on_images)
    if fallbacks:
        for job in jobs:
            _fallback_wave(job, executor, fallbacks, store_of(job), add)
        on_step(f"float fallbacks: converting again with each of the {fallbacks} noisiest layers kept float")
        total = done + len(tasks) + timings + len(jobs)
        done = _run_wave(executor, tasks, done, total, on_progress, on_images)
    for job in jobs:
        on_step(f"{job.prepared.name}: timing, one variant after the other")
        done = _finish(job, repeats, done, total, on_progress)
    return [job.report for job in jobs]


def _run_wave(executor, tasks: list, done: int, total: int, on_progress, on_images) -> int:
    """Run `tasks` [(handle, keep, images)] to the end, keeping each outcome as it comes; progress counts on
    from `done` out of `total`; -> the count after them."""
    from ..scale import Failed

    kept = {handle: (keep, images) for handle, keep, images in tasks}
    images_total, images_done, started = sum(images for *_, images in tasks), 0, time.perf_counter()
    outcomes = executor.completed([h for h, *_ in tasks])
    tasks.clear()                          # each outcome is let go once kept: Ray can free it from its store
    for done, (handle, outcome) in enumerate(outcomes, done + 1):
        keep, images = kept.pop(handle)
        keep(outcome)
        on_progress(done, total)
        if images:
            images_done += images
            on_images(images_done, images_total)
            executor.tally.images += 0 if isinstance(outcome, Failed) else images
    executor.tally.seconds += time.perf_counter() - started
    return done


def _fallback_wave(job: _Job, executor, count: int, store: Path | None, add) -> None:
    """The fallbacks' tasks for every int8 file of `job` whose target keeps layers float at its precision:
    one conversion per layer kept float, into its own folder, then its shards."""
    h = job.handles
    for cell in job.cells:
        target = get_target(cell.target)
        if cell.error is not None or cell.layers is None or cell.precision not in target.float_fallback:
            continue
        for layer in cell.layers.candidates(count):
            fallback = _Fallback(cell, layer)
            folder = None if store is None else Path(store) / "keep-float" / layer["module"]
            fallback.handle = executor.submit(convert_cell, h["model"], cell.target, cell.precision, h["calibration"],
                                              h["parity"], None if folder is None else str(folder), (),
                                              (layer["module"],))
            job.fallbacks.append(fallback)
            add(fallback.handle, _keep_conversion(fallback, job.out_dir / "keep-float" / layer["module"]))
            for i, (shard, images) in enumerate(h["shards"]):
                add(executor.submit(evaluate_shard, fallback.handle, shard, job.prepared.preprocess, executor.threads),
                    _keep(fallback.logits, i, fallback), images)


def _new_job(prepared: PreparedModel, out_dir: Path, targets, precisions, eval_data, calib_data,
                 calib_samples, eval_limit, layer_images: int = HEAD_IMAGES) -> _Job:
    evaluation = evaluation_set(prepared, eval_data, eval_limit)
    report = ModelReport(prepared.name, prepared.weights, prepared.image_size, evaluation.source,
                         len(evaluation), 0, None, 0, None, (0.0, 0.0))
    job = _Job(prepared, Path(out_dir), evaluation, _head(evaluation, prepared, layer_images), report)
    if any(get_target(t).needs_calibration(p) for t in targets for p in precisions):
        job.calibration = calibration_for(prepared, calib_data, eval_data, calib_samples, progress=True)
        report.calib_source, report.calib_images = job.calibration.source, job.calibration.samples
    ensure_folder(job.out_dir)
    return job


def _keep(into: dict, index: int, owner, what: str = ""):
    """Store a shard's logits at its index (copied: Ray hands back views of its shared store, which would
    stay pinned); a failed shard marks its owner (a cell or the reference)."""
    from ..scale import Failed

    def keep(outcome) -> None:
        if isinstance(outcome, Failed):
            if what == "reference":
                owner.reference_error = owner.reference_error or outcome.error
            elif owner.error is None:                # a failed conversion already says why
                owner.error = f"evaluation failed (shard {index + 1}): {outcome.error}"
            return
        into[index] = ShardLogits(np.array(outcome.logits), np.array(outcome.labels), outcome.unreadable)  # owned
    return keep


def _keep_conversion(owner: _Cell | _Fallback, folder: Path | None):
    """A conversion's outcome on its cell or fallback: the result, or why it failed; its file placed in
    `folder` (the report's folder holds every file it measured; None: a reused file, already there)."""
    from ..scale import Failed

    def keep(outcome) -> None:
        if isinstance(outcome, Failed):
            owner.error = f"conversion failed: {outcome.error}"
            return
        owner.result = outcome
        if folder is not None:
            outcome.parcel.place(folder)
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


def _head(evaluation: EvaluationSet, prepared: PreparedModel, count: int) -> np.ndarray:
    """The first readable evaluation images (up to `count`), decoded here; a synthetic image when none of
    them reads (latency needs one image of the right shape; the shards report the unreadable ones)."""
    head = evaluation.images.part(0, max(count, 1)).read(prepared.preprocess).images
    return head if len(head) else synthetic_images(1, prepared.image_size, prepared.preprocess).numpy()


def _gathered(parts: dict) -> np.ndarray:
    """Shard logits in image order (a shard with no readable image adds no row)."""
    rows = [parts[i].logits for i in sorted(parts) if len(parts[i].labels)]
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def _read_differently(cell: _Cell, reference: dict) -> str | None:
    """A file's shards must have read the very images the reference's did (a file that became unreadable
    in between would shift every row after it): the first shard that did not, as an error."""
    for i in sorted(cell.logits):
        mine, theirs = cell.logits[i], reference[i]
        if mine.unreadable != theirs.unreadable or not np.array_equal(mine.labels, theirs.labels):
            return (f"evaluation failed (shard {i + 1}): it read {len(mine.labels)} images, the PyTorch reference "
                    f"{len(theirs.labels)} (unreadable here: {', '.join(mine.unreadable) or 'none'})")
    return None


def _reference(job: _Job) -> tuple[np.ndarray | None, np.ndarray]:
    """The PyTorch logits and the labels of every readable image, in order; what was unreadable goes to the
    report. (None, labels) when the reference failed or could read nothing."""
    report, parts = job.report, job.reference_logits
    if job.reference_error is not None:
        return None, np.zeros(0, np.int64)
    ordered = [parts[i] for i in sorted(parts)]
    report.eval_unreadable = [name for part in ordered for name in part.unreadable]
    report.eval_skipped = len(report.eval_unreadable)
    labels = np.concatenate([part.labels for part in ordered]) if ordered else np.zeros(0, np.int64)
    report.eval_images = len(labels)
    if not len(labels):
        job.reference_error = f"none of the {len(job.evaluation)} images of {job.evaluation.source} could be read"
        return None, labels
    return _gathered(parts), labels


def _finish(job: _Job, repeats: int, done: int, total: int, on_progress) -> int:
    """Figures from the gathered logits; latency timed here, one variant after the other."""
    p, report = job.prepared, job.report
    report.torch_latency_ms = time_reference(p, job.head[:1], repeats)
    done += 1
    on_progress(done, total)
    reference, labels = _reference(job)
    if reference is not None:
        report.torch_accuracy = accuracy(reference, labels)
    fp32_size: dict[str, int] = {}
    for cell in job.cells:
        done += 1
        cell_name = f"{cell.target} {cell.precision.value}"
        if cell.error is None and reference is not None:
            cell.error = _read_differently(cell, job.reference_logits)
        if cell.error is None and reference is None:
            cell.error = f"not evaluated: the PyTorch reference failed: {job.reference_error}"
        if cell.error is not None:
            report.failures.append(f"{cell_name}: {cell.error}")
            on_progress(done, total)
            continue
        artifact = replace(cell.result.artifact, path=job.out_dir / cell.result.parcel.relpath)
        if cell.precision is Precision.fp32:
            fp32_size[cell.target] = artifact.size_bytes
        latency, note, engine = time_artifact(cell.target, artifact, job.head[:1], repeats)
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
    if job.fallbacks and reference is not None:
        _fallback_figures(job, labels)
        done += 1
        on_progress(done, total)
    return done


def _fallback_figures(job: _Job, labels: np.ndarray) -> None:
    """Each fallback's figures, into the per-layer table of the file it comes from: top-1 on the report's images
    against that file's, size, and latency against it in one interleaved run (`bench`)."""
    from ..bench import bench

    for cell in job.cells:
        group = [f for f in job.fallbacks if f.of is cell]
        if not group or cell.error is not None or cell.layers is None:
            continue
        plain = replace(cell.result.artifact, path=job.out_dir / cell.result.parcel.relpath)
        plain_top1 = accuracy(_gathered(cell.logits), labels)
        measured = []
        for f in group:
            row = {"module": f.layer["module"], "kind": f.layer["kind"], "noise_added": f.layer["noise_added"]}
            cell.layers.fallbacks.append(row)
            if f.error is None and len(f.logits) != len(cell.logits):
                f.error = "evaluation failed"
            if f.error is not None:
                row["error"] = f.error
                continue
            artifact = replace(f.result.artifact, path=job.out_dir / "keep-float" / row["module"] / f.result.parcel.relpath)
            top1 = accuracy(_gathered(f.logits), labels)
            row.update(file=str(artifact.path), accuracy=top1, delta=100 * (top1 - plain_top1),
                       size_bytes=artifact.size_bytes, size_ratio=artifact.size_bytes / plain.size_bytes,
                       latency_ratio=None)
            measured.append(row)
        if measured:
            timed = bench([plain.path, *[row["file"] for row in measured]])
            for row, timing in zip(measured, timed.rows[1:]):
                row["latency_ratio"] = timing.ratio
            cell.layers.fallback_timing = (timed.control.describe() if timed.control is not None
                                           else "no latency on this engine")


def _arm64_figures(row: dict) -> dict:
    """What the report keeps of a parity check's ARM64 row."""
    m, host = row.get("metrics") or {}, row.get("vs_host") or {}
    return {"profile": row["profile"], "max_rel": m.get("max_rel"), "cosine_min": m.get("cosine_min"),
            "top1_agreement": m.get("top1_agreement"), "vs_host_max_rel": host.get("max_rel"),
            "passed": not row["failures"], "engine": row.get("engine")}
