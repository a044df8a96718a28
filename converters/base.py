"""The Target protocol and the one registry of targets.

A target (onnx, tflite, coreml) is one module with `name`, `suffix`, `precisions`, `converters`,
`unavailable_reason()`, `convert()`, `load()` and `runner()`. Heavy imports (onnx, tensorflow,
coremltools) happen inside those methods so `import converters` stays fast with a target missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

from torch import Tensor, nn

from mobilevit_deploy.errors import MvDeployError, UnknownNameError, UnknownTargetError
from mobilevit_deploy.runners.base import Runner
from mobilevit_deploy.spec import Artifact, ExportSpec, Precision


@dataclass(frozen=True)
class Calibration:
    """Preprocessed images for static quantization, and where they came from (for reports)."""

    batches: Iterable[Tensor]     # [B, 3, H, W] float32, the model's own preprocessing
    source: str                   # a folder path, or "synthetic"
    samples: int
    skipped: int = 0              # unreadable files in the folder

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


class CalibrationRequiredError(MvDeployError):
    """Static quantization asked for without calibration data."""


@runtime_checkable
class Target(Protocol):
    name: str                              # "onnx"
    suffix: str                            # ".onnx"
    precisions: tuple[Precision, ...]      # what convert() accepts
    converters: tuple[str, ...]            # first one is the default

    def unavailable_reason(self) -> str | None:
        """None when this target can convert here; else one line saying what is missing."""

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        """Write `out_path` (a file, or a directory for .mlpackage) and describe it."""

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        """Describe an existing artifact (possibly not made by mvdeploy) from the file itself;
        `precision` overrides what the file suggests."""

    def runner(self, artifact: Artifact) -> Runner:
        """A runner for this artifact on this machine (canonical NCHW float32 feed)."""


def _registry() -> dict[str, Target]:
    from . import coreml, onnx, tflite
    return {t.name: t for t in (onnx.TARGET, tflite.TARGET, coreml.TARGET)}


TARGETS: dict[str, Target] = _registry()


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(name, TARGETS) from None


def target_for_path(path: Path) -> Target:
    """The target whose suffix the artifact has (for `mvdeploy check`)."""
    suffix = Path(path).suffix
    for target in TARGETS.values():
        if target.suffix == suffix:
            return target
    raise UnknownNameError("artifact suffix", suffix or "(none)", [t.suffix for t in TARGETS.values()])


def check_precision(target: Target, precision: Precision) -> None:
    if precision not in target.precisions:
        raise UnknownNameError(f"precision for target {target.name}", precision.value,
                               [p.value for p in target.precisions])
