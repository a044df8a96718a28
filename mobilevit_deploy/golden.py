"""Golden files: a checked artifact's inputs and outputs, saved so a later file can be checked without PyTorch.

`save_golden` writes, into one folder: `inputs.npy` (the parity images, [N, 3, H, W] float32,
preprocessed), `outputs.npy` (what the artifact computed for them, [N, K] float32) and `golden.json`
(the artifact's name and sha256, target, precision, the tolerance, the tool versions, where the
images came from). `check_golden` runs any later file of the same target on its engine with those
inputs and compares with the comparator and the target's tolerance, as `check` does against PyTorch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ArtifactError, DataError, first_line
from .outputs import ensure_folder, move_into_place, staging, write_text_atomic
from .parity import ParityReport, compare, tolerance_for
from .spec import Artifact

SCHEMA = 1
FILES = ("inputs.npy", "outputs.npy", "golden.json")


def sha256_of(path: Path) -> str:
    """A file's sha256; for a folder (.mlpackage), over its files' relative paths and bytes, sorted."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    for f in files:
        if f is not path:
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _run(target, artifact: Artifact, images: np.ndarray) -> tuple[np.ndarray, str]:
    with target.runner(artifact) as runner:
        return runner.infer(images), runner.engine


def save_golden(path: Path, folder: Path, model: str, weights: Path | str | None = None,
                num_classes: int | None = None, data: Path | None = None) -> Path:
    """Run the artifact on the parity inputs `check` uses for it (the same seeded synthetic images
    and real images) and write the golden folder: each file staged, then renamed into place."""
    from .pipeline import load_for_model, parity_inputs
    from .versions import tool_versions

    target, artifact, prepared = load_for_model(path, model, weights, num_classes)
    parity = parity_inputs(prepared, data)
    images, samples, trained = parity.images, parity.describe(), prepared.trained
    outputs, engine = _run(target, artifact, images)
    tolerance = tolerance_for(target, artifact.precision)
    meta = {"schema": SCHEMA, "artifact": Path(path).name, "sha256": sha256_of(path),
            "target": artifact.target, "precision": artifact.precision.value, "engine": engine,
            "tolerance": tolerance.to_dict(), "trained": trained, "samples": samples,
            "input_shape": list(images.shape), "output_shape": list(outputs.shape), "tools": tool_versions()}
    folder = Path(folder)
    ensure_folder(folder, "--save-golden")
    with staging(folder) as tmp:
        np.save(tmp / "inputs.npy", np.ascontiguousarray(images, dtype=np.float32))
        np.save(tmp / "outputs.npy", np.ascontiguousarray(outputs, dtype=np.float32))
        write_text_atomic(tmp / "golden.json", json.dumps(meta, indent=2) + "\n")
        for name in FILES:
            move_into_place(tmp / name, folder / name)
    return folder


@dataclass(frozen=True)
class Golden:
    inputs: np.ndarray
    outputs: np.ndarray
    meta: dict


def read_golden(folder: Path) -> Golden:
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"golden folder {folder} lacks {', '.join(missing)} (write one with check --save-golden)")
    try:
        meta = json.loads((folder / "golden.json").read_text(encoding="utf-8"))
        inputs = np.load(folder / "inputs.npy", allow_pickle=False)
        outputs = np.load(folder / "outputs.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read golden folder {folder}: {first_line(e)}") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise DataError(f"{folder / 'golden.json'}: unknown golden schema {meta.get('schema') if isinstance(meta, dict) else meta!r}")
    if inputs.ndim != 4 or len(inputs) != len(outputs):
        raise DataError(f"golden folder {folder}: {inputs.shape} inputs do not go with {outputs.shape} outputs")
    return Golden(inputs.astype(np.float32), outputs.astype(np.float32), meta)


def check_golden(path: Path, folder: Path) -> ParityReport:
    """Run the artifact on the golden inputs and compare with the golden outputs, under the tolerance
    of the artifact's (target, precision). A different file (a re-conversion) is expected: its
    checksum is reported, not judged."""
    from .targets import load_artifact

    target, artifact = load_artifact(path)
    golden = read_golden(folder)
    saved_target = golden.meta.get("target")
    if saved_target != artifact.target:
        raise DataError(f"golden outputs in {folder} come from a {saved_target} file; {Path(path).name} is {artifact.target}")
    shape = artifact.inputs[0].canonical_shape
    if tuple(golden.inputs.shape[1:]) != tuple(shape[1:]):
        raise DataError(f"golden inputs are {list(golden.inputs.shape[1:])}, {Path(path).name} takes {list(shape[1:])}")
    tolerance = tolerance_for(target, artifact.precision)
    engine = artifact.target
    try:
        candidate, engine = _run(target, artifact, golden.inputs)
        metrics = compare(golden.outputs, candidate)
        failures = tolerance.failures(metrics, trained=bool(golden.meta.get("trained", True)))
    except ArtifactError as e:
        metrics, failures = None, [str(e)]
    sha = sha256_of(path)
    same = sha == golden.meta.get("sha256")
    notes = [f"same file as the golden outputs' (sha256 {sha[:12]})" if same else
             f"a different file from the golden outputs' (sha256 {sha[:12]}, golden {str(golden.meta.get('sha256'))[:12]})"]
    saved_precision = golden.meta.get("precision")
    if saved_precision != artifact.precision.value:
        notes.append(f"golden outputs come from a {saved_precision} file; judged with the {artifact.precision.value} tolerance")
    return ParityReport(
        artifact=str(path), target=artifact.target, precision=artifact.precision.value,
        reference=f"golden outputs of {golden.meta.get('artifact')} ({saved_precision}, {golden.meta.get('engine')})",
        engine=engine, samples=golden.meta.get("samples", {"total": len(golden.inputs)}), metrics=metrics,
        tolerance=tolerance, failures=failures, weights="(from the golden folder)", notes=notes)


@dataclass(frozen=True)
class CheckedFile:
    """`mvdeploy check` of one file: its parity report, and what was written beside it."""

    report: ParityReport
    size_bytes: int
    parity_json: Path | None = None     # <file>.parity.json (a check against PyTorch writes one)
    golden: Path | None = None          # the golden folder written, when asked and the file passed


def check_path(path: Path, model: str | None = None, weights: Path | str | None = None,
               num_classes: int | None = None, data: Path | None = None, golden: Path | None = None,
               save_to: Path | None = None, progress: bool = False, arm_cpus: tuple = ()) -> CheckedFile:
    """A file checked against golden outputs (`golden`, no PyTorch) or against the PyTorch `model`;
    with `save_to`, a file that passed also gets its golden folder there; `arm_cpus`: also checked on
    the engine's ARM64 build on those emulated CPUs. The options are refused before any work when they
    do not go together."""
    from .errors import InvalidValueError
    from .outputs import require_writable_folder
    from .parity import parity_path
    from .pipeline import check_file

    path = Path(path)
    if golden is not None:
        if save_to is not None:
            raise InvalidValueError("--golden and --save-golden do not go together: check first, then save")
        if arm_cpus:
            raise InvalidValueError("--golden checks on this machine; --arch arm64 checks against PyTorch (--model)")
        return CheckedFile(check_golden(path, golden), _size_of(path))
    if model is None:
        raise InvalidValueError("pass --model NAME (the PyTorch model the file should match), or --golden DIR")
    if save_to is not None:
        require_writable_folder(save_to, "--save-golden")
    artifact, report = check_file(path, model, weights, num_classes, data, progress=progress, arm_cpus=arm_cpus)
    saved = (save_golden(path, save_to, model, weights, num_classes, data)
             if save_to is not None and report.passed else None)
    return CheckedFile(report, artifact.size_bytes, parity_path(path), saved)


def _size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


__all__ = ["save_golden", "check_golden", "read_golden", "sha256_of", "Golden", "check_path", "CheckedFile"]
