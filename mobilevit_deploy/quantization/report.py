"""`mvdeploy report`: convert (or reuse) every (target, precision), measure each on the evaluation
images, and analyse int8 layer by layer. Rendering lives in `mobilevit_deploy.reports`."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..calibration import calibration_for
from ..data import LoadedImages, load_folder
from ..errors import DataError, MvDeployError
from ..fusion import fuse
from ..parity import parity_path
from ..pipeline import PreparedModel, artifact_name, convert, parity_inputs
from ..runners.torch import TorchRunner
from ..spec import Precision
from ..targets import get_target
from ..versions import tool_versions  # noqa: F401  (re-exported: reports record the tools)
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


def measure_model(prepared: PreparedModel, targets: list[str], precisions: list[Precision], out_dir: Path,
                  eval_data: Path | None = None, calib_data: str | None = None, calib_samples: int = 200,
                  eval_limit: int | None = None, repeats: int = 30, layer_images: int = 16, reuse: bool = True,
                  on_step=lambda text: None) -> ModelReport:
    evaluation = evaluation_images(prepared, eval_data, eval_limit)
    images, labels = evaluation.images.numpy(), evaluation.labels.numpy()
    with TorchRunner(prepared.model, input_shape=prepared.input_shape) as reference_runner:
        reference = reference_runner.infer(images)
        torch_latency = time_runner(reference_runner, images[:1], repeats)
    torch_accuracy = accuracy(reference, labels)
    report = ModelReport(prepared.name, prepared.weights, prepared.image_size, evaluation.source, len(images),
                         evaluation.skipped, None, 0, torch_accuracy, torch_latency)
    calibration = None
    if any(get_target(t).needs_calibration(p) for t in targets for p in precisions):
        calibration = calibration_for(prepared, calib_data, eval_data, calib_samples, progress=True)
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
                    result = convert(prepared, target, prepared.spec(precision), out_dir, inputs=parity,
                                     calibration=calibration if target.needs_calibration(precision) else None)
                    artifact, passed, notes = result.artifact, result.report.passed, result.report.notes
            except MvDeployError as e:
                report.failures.append(f"{target_name} {precision.value}: {e}")
                continue
            if precision is Precision.fp32:
                fp32_size = artifact.size_bytes
            with target.runner(artifact) as runner:
                logits = runner.infer(images)
                note = runner.latency_unmeasurable
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

