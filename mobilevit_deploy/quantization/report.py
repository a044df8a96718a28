"""`mvdeploy report`: convert (or reuse) every (target, precision), measure each on the evaluation
images, and analyse int8 layer by layer. Rendering lives in `mobilevit_deploy.reports`."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from converters import get_target
from converters.base import Calibration
from ..calibration import DIGITS, load_calibration, needs_calibration
from ..data import LoadedImages, load_folder, list_images
from ..errors import DataError, MvDeployError
from ..fusion import fuse
from ..parity import ParityReport, parity_path
from ..pipeline import PreparedModel, artifact_name, convert, parity_inputs
from ..runners.torch import TorchRunner
from ..spec import Precision
from .evaluate import VariantResult, accuracy, evaluate_logits, time_runner
from .layers import LayerAnalysis, analyze


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

    def to_dict(self) -> dict:
        return {"command": self.command, "tools": self.tools, "models": [m.to_dict() for m in self.models]}


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0]}
    for package in ("mvdeploy", "torch", "numpy", "onnxruntime", "litert-torch", "ai-edge-litert", "torchao",
                    "coremltools", "onnx2tf", "tensorflow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def evaluation_images(prepared: PreparedModel, eval_data: Path | None, limit: int | None) -> LoadedImages:
    """--eval-data (an ImageFolder), or the reference checkpoint's own test split."""
    if eval_data is not None:
        return load_folder(Path(eval_data), prepared.preprocess, count=limit, progress="reading evaluation images")
    if prepared.dataset == "digits":
        from ..digits import read_digits
        return read_digits("test", prepared.preprocess, progress="reading the digits test split").take(limit)
    raise DataError(f"{prepared.name} has no reference data: pass --eval-data DIR (an ImageFolder tree)")


def calibration_for(prepared: PreparedModel, calib_data: str | None, eval_data: Path | None,
                    samples: int) -> Calibration:
    """Calibration images that never overlap the evaluation images."""
    if calib_data is None and prepared.dataset == "digits" and eval_data is None:
        return load_calibration(DIGITS, prepared, samples, progress=True)       # train split vs test split
    if calib_data is None:
        raise DataError("int8 needs calibration images disjoint from --eval-data: pass --calib-data DIR")
    if str(calib_data) != "synthetic" and eval_data is not None:
        evaluated = {f.path.resolve() for f in list_images(Path(eval_data))[0]}
        loaded = load_folder(Path(calib_data), prepared.preprocess, count=samples, exclude=evaluated,
                             progress="reading calibration images")
        return Calibration(tuple(torch.split(loaded.images, 16)), str(calib_data), len(loaded.images),
                           skipped=loaded.skipped)
    return load_calibration(calib_data, prepared, samples, progress=True)


def _reusable(path: Path, prepared: PreparedModel) -> bool:
    """An artifact from an earlier run of the same weights whose parity check passed."""
    report = parity_path(path)
    if not (path.exists() and report.exists()):
        return False
    facts = json.loads(report.read_text())
    return facts.get("passed") is True and facts.get("weights") == prepared.weights


def measure_model(prepared: PreparedModel, targets: list[str], precisions: list[Precision], out_dir: Path,
                  eval_data: Path | None = None, calib_data: str | None = None, calib_samples: int = 200,
                  eval_limit: int | None = None, repeats: int = 30, layer_images: int = 16, reuse: bool = True,
                  on_step=lambda text: None) -> ModelReport:
    evaluation = evaluation_images(prepared, eval_data, eval_limit)
    images, labels = evaluation.images.numpy(), evaluation.labels.numpy()
    reference_runner = TorchRunner(prepared.model, (1, 3, prepared.image_size, prepared.image_size))
    reference = reference_runner.infer(images)
    torch_accuracy = accuracy(reference, labels)
    report = ModelReport(prepared.name, prepared.weights, prepared.image_size, evaluation.source, len(images),
                         evaluation.skipped, None, 0, torch_accuracy, time_runner(reference_runner, images[:1], repeats))
    calibration = None
    if any(needs_calibration(t, p) for t in targets for p in precisions):
        calibration = calibration_for(prepared, calib_data, eval_data, calib_samples)
        report.calib_source, report.calib_images = calibration.source, calibration.samples
    parity = parity_inputs(prepared, None, synthetic=8, real=0)
    for target_name in targets:
        target = get_target(target_name)
        fp32_size = None
        for precision in precisions:
            if precision not in target.precisions:
                continue
            on_step(f"{prepared.name} {target_name} {precision.value}")
            path = out_dir / artifact_name(prepared.name, precision, target, None)
            try:
                if reuse and _reusable(path, prepared):
                    artifact = target.load(path, precision)
                    parity_report = json.loads(parity_path(path).read_text())
                    passed, notes = parity_report["passed"], parity_report.get("notes", [])
                else:
                    result = convert(prepared, target_name, precision, out_dir, inputs=parity,
                                     calibration=calibration if needs_calibration(target_name, precision) else None)
                    artifact, passed, notes = result.artifact, result.report.passed, result.report.notes
            except MvDeployError as e:
                report.failures.append(f"{target_name} {precision.value}: {e}")
                continue
            if precision is Precision.fp32:
                fp32_size = artifact.size_bytes
            with target.runner(artifact) as runner:
                logits = runner.infer(images)
                note = getattr(runner, "latency_unmeasurable", None)
                latency = (None, None) if note else time_runner(runner, images[:1], repeats)
                engine = runner.engine
            figures = evaluate_logits(logits, labels, reference, torch_accuracy)
            report.rows.append(VariantResult(
                prepared.name, target_name, precision.value, str(artifact.path), engine, artifact.size_bytes,
                artifact.size_bytes / fp32_size if fp32_size else None, latency[0], latency[1], note,
                parity_passed=passed, notes=list(notes), **figures))
    if calibration is not None and any(p is Precision.int8 for p in precisions) and "tflite" in targets:
        on_step(f"{prepared.name} int8 per-layer error")
        fused = fuse(prepared.model).model
        calib = [x for batch in calibration.batches for x in batch][:64]
        chosen = torch.from_numpy(images[:layer_images])
        report.layers = analyze(fused, prepared.image_size, calib, list(chosen))
    return report

