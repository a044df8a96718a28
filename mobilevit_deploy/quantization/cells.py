"""The report's units of work, as plain functions of picklable data so that any executor can run them
(`mobilevit_deploy/scale.py`): convert one (target, precision) cell, run one file or the PyTorch model
over one shard of the evaluation images, analyse int8 layer by layer.

A shard names its images (`quantization/evaluate.py`); the task reads and preprocesses them where it
runs, `CHUNK` at a time, and returns only logits, labels and the names of the images it could not read.

And how an artifact travels between the process that converted it, the processes that evaluate it and
the driver that writes the report: as a `Parcel` (`pack` makes one) holding its bytes (nothing assumes a
shared disk), or its place in a folder that all of them reach (`--artifact-store DIR`, or the report's
own folder when everything runs here).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..outputs import move_into_place, staging, write_text_atomic
from ..parity import parity_path
from ..spec import Artifact, Calibration, Precision, Preprocess
from .evaluate import shards


# Torch threads while a cell converts (calibration, parity) and while int8 is analysed layer by layer.
# Another thread count changes float sums in their last bits, and int8 rounding turns that into other
# scales, another file and figures that move in the first decimal: with one thread everywhere, the same
# report gives the same files and figures in this process, on N local workers or on any cluster node.
QUANTIZATION_THREADS = 1


@contextmanager
def torch_threads(count: int):
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclass(frozen=True)
class Parcel:
    """An artifact (a file, or a folder such as .mlpackage) with its parity report, on its way between
    processes (`pack` makes one)."""

    relpath: str                               # under its folder: "m-int8.tflite", or "failed/m-int8.tflite"
    files: tuple[tuple[str, bytes], ...] = ()  # (path inside the artifact, "" for a single file; its bytes)
    store: str | None = None                   # the folder holding `relpath`, when it travels by a shared path
    parity_json: str | None = None             # its <artifact>.parity.json, when it was checked

    @property
    def size_bytes(self) -> int:
        return sum(len(data) for _, data in self.files)

    def open(self, scratch: Path) -> Path:
        """The artifact as a path here: where the store has it, else written under `scratch`."""
        if self.store is not None:
            return Path(self.store) / self.relpath
        path = Path(scratch) / Path(self.relpath).name
        for inner, data in self.files:
            target = path / inner if inner else path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return path

    def place(self, folder: Path) -> Path:
        """Put the artifact and its parity report under `folder` (the report's artifacts folder), atomically;
        nothing to do when the store is that folder."""
        folder = Path(folder)
        final = folder / self.relpath
        if self.store is not None and Path(self.store).resolve() == folder.resolve():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)     # a shared store: no sweeping of others' staging
        with staging(final.parent) as tmp:
            if self.store is not None:
                source = Path(self.store) / self.relpath
                staged = Path(tmp) / final.name
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, staged)
            else:
                staged = self.open(Path(tmp))
            move_into_place(staged, final)
        if self.parity_json is not None:              # it names the path where the report keeps the file
            facts = json.loads(self.parity_json)
            facts["artifact"] = str(final)
            write_text_atomic(parity_path(final), json.dumps(facts, indent=2) + "\n")
        return final


def pack(path: Path, folder: Path, store: Path | None) -> Parcel:
    """`path` (under `folder`) ready to travel: by reference when `store` is `folder` or a copy lands
    in `store`, else as bytes."""
    path, folder = Path(path), Path(folder)
    relpath = path.relative_to(folder).as_posix()
    report = parity_path(path)
    parity_json = report.read_text() if report.exists() else None
    if store is None:
        files = (tuple((p.relative_to(path).as_posix(), p.read_bytes()) for p in sorted(path.rglob("*")) if p.is_file())
                 if path.is_dir() else (("", path.read_bytes()),))
        return Parcel(relpath, files, None, parity_json)
    store = Path(store)
    if store.resolve() != folder.resolve():
        Parcel(relpath, (), str(folder), parity_json).place(store)
    return Parcel(relpath, (), str(store), parity_json)


@dataclass(frozen=True)
class CellResult:
    """A converted (or reused) artifact of one cell: where it is, what it is, what its parity check said."""

    artifact: Artifact              # its path is the converter's; `parcel` says where to find the file
    parcel: Parcel
    parity_passed: bool | None
    notes: tuple[str, ...]
    arm64: tuple[dict, ...] = ()    # the parity check's rows on the engine's ARM64 build (emulated CPUs)


def convert_cell(prepared, target_name: str, precision: Precision, calibration: Calibration | None,
                 parity, store: str | None, arm_cpus: tuple = (), keep_float: tuple[str, ...] = ()) -> CellResult:
    """Convert and check one cell in a scratch folder here, through the one convert sequence with the
    report's own calibration and parity images (and on `arm_cpus`: the schedule passes none for a target
    that does not run on ARM64; `keep_float`: modules left in float, for a measured fallback); the file then
    goes to `store` when it is given (a folder the driver reads too), else back as bytes."""
    from ..pipeline import convert_all
    from ..targets import get_target

    target = get_target(target_name)
    calibration = calibration if target.needs_calibration(precision) else None
    with tempfile.TemporaryDirectory(prefix="mvdeploy-cell-") as scratch, torch_threads(QUANTIZATION_THREADS):
        result = convert_all(prepared, target, [prepared.spec(precision, keep_float=keep_float)], Path(scratch), inputs=parity,
                             calibration=calibration, arm_cpus=arm_cpus).results[0]
        parcel = pack(result.artifact.path, Path(scratch), None if store is None else Path(store))
    report = result.report
    passed = report.passed if report is not None else None
    notes = tuple(report.notes) if report is not None else tuple(result.artifact.notes)
    return CellResult(result.artifact, parcel, passed, notes, tuple(report.arm64 or []) if report is not None else ())


def reusable(path: Path, weights: str, arm_cpus: tuple = ()) -> bool:
    """An artifact from an earlier run of the same weights whose parity check passed (on each of
    `arm_cpus` too: the profiles asked for are the ones its report has rows for)."""
    report = parity_path(path)
    if not (path.exists() and report.exists()):
        return False
    facts = json.loads(report.read_text())
    checked_on = {row["profile"] for row in facts.get("arm64") or []}
    return (facts.get("passed") is True and facts.get("weights") == weights
            and checked_on >= {cpu.name for cpu in arm_cpus})


def reused_cell(path: Path, target_name: str, precision: Precision, folder: Path, store: Path | None) -> CellResult:
    """An artifact an earlier run left in the report's folder, with its passed parity report."""
    from ..targets import get_target

    artifact = get_target(target_name).load(path, precision)
    facts = json.loads(parity_path(path).read_text())
    return CellResult(artifact, pack(path, folder, store), facts["passed"], tuple(facts.get("notes", [])),
                      tuple(facts.get("arm64") or []))


# Images decoded at a time inside an evaluation task: its memory is this many preprocessed images
# (64 at 256x256 float32: 50 MB), whatever --shard-size is.
CHUNK = 64


@dataclass(frozen=True, eq=False)
class ShardLogits:
    """What an evaluation task sends back: never pixels."""

    logits: np.ndarray                 # [n, K] float32, one row per readable image, in the shard's order
    labels: np.ndarray                 # [n] int64, -1 where unlabelled
    unreadable: tuple[str, ...] = ()   # the shard's images that could not be decoded, by name


def shard_logits(shard, preprocess: Preprocess, infer) -> ShardLogits:
    """Read `shard` here, CHUNK images at a time through `preprocess`, and `infer` each chunk ([n, 3, H, W]
    float32 -> [n, K]; one image at a time, so no figure depends on where shards or chunks were cut)."""
    logits, labels, unreadable = [], [], []
    for start, stop in shards(len(shard), CHUNK):
        images = shard.part(start, stop).read(preprocess)
        unreadable += images.unreadable
        if len(images.labels):
            logits.append(np.asarray(infer(images.images), dtype=np.float32))
            labels.append(images.labels)
    if not logits:
        return ShardLogits(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), tuple(unreadable))
    return ShardLogits(np.concatenate(logits), np.concatenate(labels), tuple(unreadable))


def evaluate_shard(cell: CellResult, shard, preprocess: Preprocess, threads: int | None) -> ShardLogits:
    """The artifact's logits on one shard of the evaluation images, read where this runs."""
    from ..targets import get_target

    target = get_target(cell.artifact.target)
    engine = {} if threads is None else {"num_threads": threads}
    with tempfile.TemporaryDirectory(prefix="mvdeploy-shard-") as scratch:
        artifact = replace(cell.artifact, path=cell.parcel.open(Path(scratch)))
        with target.runner(artifact, **engine) as runner:
            return shard_logits(shard, preprocess, runner.infer)


def reference_shard(prepared, shard) -> ShardLogits:
    """PyTorch fp32 (unfused, eager) logits on one shard, read where this runs: what every file is compared with."""
    from ..runners.torch import TorchRunner

    with TorchRunner(prepared.model, input_shape=prepared.input_shape) as runner:
        return shard_logits(shard, prepared.preprocess, runner.infer)


def analyze_layers(prepared, target_name: str, calibration: list, images: list):
    """Per-layer int8 error of the fused model under the quantizer the target declares
    (its `layer_quantizer()`; see `quantization.layers.analyze`)."""
    from ..fusion import fuse
    from ..targets import get_target
    from .layers import analyze

    target = get_target(target_name)
    with torch_threads(QUANTIZATION_THREADS):
        return analyze(fuse(prepared.model).model, prepared.image_size, calibration, images,
                       target.layer_quantizer(), made_by=f"the {target.name} int8 conversion's quantizer")


def analyze_file(prepared, cell: CellResult):
    """The per-layer noise of the shipped file itself, through the engine of `mvdeploy debug`
    (`debug.run.debug_artifact`); a target whose engine cannot expose intermediates says why."""
    from ..debug.run import debug_artifact
    from ..targets import get_target
    from .report import FileLayers

    target = get_target(cell.artifact.target)
    precision = cell.artifact.precision.value
    if target.intermediates is None:
        return FileLayers(target.name, precision, "", 0, why=f"{target.name}'s engine does not expose a file's "
                                                             "intermediate tensors (mvdeploy debug cannot either)")
    with tempfile.TemporaryDirectory(prefix="mvdeploy-layers-") as scratch, torch_threads(QUANTIZATION_THREADS):
        report = debug_artifact(target, replace(cell.artifact, path=cell.parcel.open(Path(scratch))), prepared)
    return FileLayers(target.name, precision, report.engine, report.images["total"],
                      [{"module": r.module, "kind": r.kind, "sqnr_db": r.metrics.sqnr_db, "noise_added": r.noise_added}
                       for r in report.layers])
