"""One root error and typed leaves. Library code raises these; only the CLI turns them into exit codes."""
from __future__ import annotations

import difflib
from typing import Iterable


class MvDeployError(Exception):
    """Root of every error mvdeploy raises on purpose. The message is one readable line."""


def first_line(error: BaseException) -> str:
    """The first non-blank line of an error's message, else its type name: never empty, never raises."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def did_you_mean(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"known: {', '.join(known)}{hint}"


class UnknownNameError(MvDeployError):
    """A model, target, precision or converter name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        super().__init__(f"unknown {kind} '{name}' ({did_you_mean(name, known)})")


class UnknownModelError(UnknownNameError):
    def __init__(self, name: str, known: Iterable[str]):
        super().__init__("model", name, known)


class UnknownTargetError(UnknownNameError):
    def __init__(self, name: str, known: Iterable[str]):
        super().__init__("target", name, known)


class InputSizeError(MvDeployError):
    """An image size the model cannot take."""


class WeightsError(MvDeployError):
    """A weights file that is missing, unreadable or not a state dict."""


class WeightMismatchError(WeightsError):
    """A weights file whose keys or shapes do not match the model."""

    def __init__(self, model: str, missing: list[str], unexpected: list[str], shapes: list[str]):
        self.missing, self.unexpected, self.shapes = missing, unexpected, shapes

        def few(items: list[str]) -> str:
            shown = ", ".join(items[:3])
            return shown + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {few(shapes)}")
        super().__init__(
            f"weights do not fit {model}: " + "; ".join(parts)
            + " (is this a checkpoint for another model or --num-classes?)"
        )


class WeightsConflictError(WeightsError):
    """A flag that contradicts the weights or their folder (a model name, --num-classes): names both."""


class FusionError(MvDeployError):
    """Fusion was asked of something that cannot be fused (for example a BatchNorm in training mode)."""


class DataError(MvDeployError):
    """Image data that cannot be used: an empty folder, no readable images."""


class TargetUnavailableError(MvDeployError):
    """A target whose toolchain is not installed or cannot run on this machine."""


class InvalidValueError(MvDeployError):
    """A number or value outside what makes sense (a negative count, zero repeats)."""


class OutputError(MvDeployError):
    """An output location that cannot be written (a file where a folder should be, read-only, full)."""


class OptionsError(MvDeployError):
    """An option a target does not take, or a value it cannot use."""


class CalibrationRequiredError(MvDeployError):
    """Static quantization asked for without calibration data."""


class ShapeMismatchError(MvDeployError, ValueError):
    """An artifact whose inputs or outputs do not fit the PyTorch model it is checked against."""


class RunnerStateError(MvDeployError):
    """A runner used outside its `with` block."""


class BundleError(MvDeployError):
    """A bundle that cannot be written or read."""


class ConversionError(MvDeployError):
    """A converter failed to produce an artifact."""


class ArtifactError(MvDeployError):
    """An artifact that cannot be loaded or run (corrupt file, unsupported ops)."""


class ParityError(MvDeployError):
    """An artifact that does not compute what the PyTorch model computes. Carries the report."""

    def __init__(self, report):
        self.report = report
        first = report.failures[0] if report.failures else "parity failed"
        super().__init__(f"parity failed for {report.artifact}: {first}")


class DegenerateReferenceError(MvDeployError):
    """The PyTorch outputs on the parity inputs carry no signal (all near zero, constant, or the same for
    every image): no comparison with them can tell a right file from a wrong one. Not a conversion defect."""

    def __init__(self, why: str):
        self.why = why
        super().__init__(f"the model's outputs carry no signal on these inputs: {why}; parity cannot be judged on "
                         "them (not a conversion defect: are the weights trained? --data gives real images)")


def at_least(value: int | None, minimum: int, flag: str) -> None:
    """Refuse a count below `minimum` (None passes: the option was not given)."""
    if value is not None and value < minimum:
        raise InvalidValueError(f"{flag} must be at least {minimum}; got {value}")


class BudgetError(MvDeployError):
    """An int8 conversion that cannot be brought within its accuracy budget (`--max-accuracy-drop`) in the
    steps allowed; its one line says the best step reached. Nothing was written."""
