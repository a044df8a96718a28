"""The Target contract, the one validation every target shares, and the registry of targets.

A target (onnx, tflite, coreml, ...) turns a PyTorch model into a file for one runtime. Targets live
outside the core, in the `mvdeploy_targets` package (or any other installed package): they are found
through the entry-point group `mvdeploy.targets` declared in a package's pyproject.toml, so the core
reaches them through this registry and never imports them. A third-party package adds a target by
declaring `[project.entry-points."mvdeploy.targets"] name = "package.module:TARGET"`.

Each target declares a frozen `Options` dataclass (its own flags, with defaults); `options(**given)`
builds one and refuses names the target does not take. `validate(spec)` refuses a conversion that
cannot work before any work (availability, precision, converter, options, I/O) and returns a
`ValidSpec`, which is what `convert` works from: the convert sequence (`pipeline.convert_all`) validates
each spec once, and `convert` takes a ValidSpec as it is (`validated`), so no validation runs twice or is
skipped. Whether a calibrating precision has its images is a separate rule (`require_calibration`),
applied when they exist. ("Check" is kept for proving parity: `pipeline.check_artifact`.)
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from torch import nn

from .extras import install_line, needs
from .errors import (ArtifactError, CalibrationRequiredError, ConversionError, OptionsError, TargetUnavailableError,
                     UnknownNameError, UnknownTargetError, did_you_mean, first_line)
from .parity.audit import StoredTensor
from .parity.tolerances import Tolerance
from .replica import Replica, not_reproduced
from .runners.base import Runner
from .spec import Artifact, Calibration, ExportSpec, Precision, ValidSpec

ENTRY_POINT_GROUP = "mvdeploy.targets"


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A target with no options of its own."""


@runtime_checkable
class Target(Protocol):
    name: str                              # "onnx"
    suffix: str                            # ".onnx"
    precisions: tuple[Precision, ...]      # what convert() accepts
    converters: tuple[str, ...]            # the first one is the default
    Options: type                          # a frozen dataclass of this target's own options
    tolerances: dict[Precision, Tolerance]  # the parity bound of each precision (from parity.tolerances)
    requires: tuple[str, ...]              # modules the toolchain imports; unavailable_reason names the missing
    extra: str                             # the pyproject extra that installs them: pip install "mvdeploy[extra]"
    intermediates: Callable | None         # debug's capture of this engine's intermediate tensors, or None
    layer_quantizer: Callable | None       # () -> the PT2E quantizer the int8 layer analysis uses, or None
    float_fallback: tuple[Precision, ...]  # precisions whose conversion can leave named modules float (--keep-float)
    arm64_unsupported: str | None          # None when runner(artifact, arm_cpu=...) runs its ARM64 build; else why not

    def unavailable_reason(self) -> str | None:
        """None when this target can convert here; else one line saying what is missing."""

    def options(self, **given) -> object:
        """This target's Options from keyword values; unknown names are an OptionsError."""

    def needs_calibration(self, precision: Precision) -> bool:
        """True when converting at `precision` runs calibration images through the model."""

    def validate(self, spec: ExportSpec) -> ValidSpec:
        """Validate a conversion before any work; returns the spec with its Options filled in."""

    def validated(self, spec: ExportSpec, calibration: Calibration | None = None) -> ValidSpec:
        """What `convert` works from: a spec this target validated as it is, any other validated now;
        and the calibration rule (`require_calibration`)."""

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        """Write `out_path` (a file, or a directory for .mlpackage) and describe it. `spec`: a ValidSpec
        of this target (taken as it is) or a plain ExportSpec (validated first, once)."""

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        """Describe an existing artifact (possibly not made by mvdeploy) from the file itself;
        `precision` overrides what the file suggests."""

    def runner(self, artifact: Artifact, **engine_options) -> Runner:
        """A runner for this artifact on this machine (canonical NCHW float32 feed)."""


class BaseTarget:
    """What every target shares: options handling and the one pre-flight validation.

    Subclasses set the class attributes (among them their `tolerances`, their `requires`, and their
    debug `intermediates` and `layer_quantizer` when they have them), implement convert/load/runner,
    and may add their own rules in `_validate` (called last, with the Options already built). `convert`
    begins with `spec = self.validated(spec, calibration)`, which never validates a spec twice."""

    name: str = ""
    suffix: str = ""
    precisions: tuple[Precision, ...] = ()
    converters: tuple[str, ...] = ()
    Options: type = NoOptions
    calibrated: tuple[Precision, ...] = ()      # precisions that run calibration images through the model
    int8_io_precisions: tuple[Precision, ...] = ()
    tolerances: dict[Precision, Tolerance] = {}   # one bound per precision, built from parity.tolerances
    requires: tuple[str, ...] = ()              # importable modules the toolchain needs
    extra: str = ""                             # the extra that installs them (default: the target's name)
    intermediates: Callable | None = None       # (artifact, module names, workdir) -> a debug.capture engine capture
    layer_quantizer: Callable | None = None     # () -> the PT2E quantizer of this target's int8 conversion
    float_fallback: tuple[Precision, ...] = ()  # precisions that honour spec.keep_float (checked in the written file)
    integrity: dict[Precision, Tolerance] = {}  # the bound against the replica, per precision it reproduces
    weights_unread: str = "its weights are not read"    # why `stored_tensors` gives nothing, for the report
    keeps_epsilons: bool = False                # its files keep each norm epsilon as a scalar constant (audited)
    arm64_unsupported: str | None = "its engine has no ARM64 build in the ARM64 engine"   # None: --arch arm64 runs it

    def __init_subclass__(cls, **kwargs):
        """A target written for the old contract (its rules in `_check`) would have its rules skipped
        without a word: refuse it where it is defined, naming the new hook."""
        super().__init_subclass__(**kwargs)
        stale = sorted({"check", "_check", "checked"} & set(vars(cls)))
        if stale:
            raise TypeError(f"target class {cls.__name__} defines {', '.join(stale)}: a target's own rules go in "
                            "_validate(spec) (BaseTarget.validate runs them once, before any work)")

    def unavailable_reason(self) -> str | None:
        """None when every module in `requires` is importable; else the one line naming the extra to install
        (`coreml needs: pip install "mvdeploy[coreml]" (coremltools is not installed)`)."""
        return needs(self.name, self.extra or self.name, self.requires)

    def options(self, **given) -> object:
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(given) - known)
        if unknown:
            takes = did_you_mean(unknown[0], known) if known else "it takes none"
            raise OptionsError(f"target {self.name} has no option {', '.join(repr(u) for u in unknown)} ({takes})")
        try:
            return self.Options(**given)
        except (TypeError, ValueError) as e:
            raise OptionsError(f"target {self.name}: {e}") from None

    def needs_calibration(self, precision: Precision) -> bool:
        return precision in self.calibrated

    def replica(self, model: nn.Module, artifact: Artifact, calibration: Calibration | None) -> Replica:
        """PyTorch computing what `artifact`'s precision computes (the fused `model`, the artifact's
        converter, its calibration drawn again), for a file that exists; a conversion hands over its own
        (`Artifact.replica`). Default: not reproduced."""
        return not_reproduced(f"{self.name} {artifact.precision.value} is not reproduced in PyTorch")

    def stored_tensors(self, artifact: Artifact) -> list[StoredTensor] | None:
        """The file's weights for the weight audit (`parity.audit`); None when the format is not read."""
        return None

    def validate(self, spec: ExportSpec) -> ValidSpec:
        """Every rule a spec must pass before any work, once; the ValidSpec it returns is what
        `convert` takes. Calibration images are not asked for here (see `require_calibration`)."""
        reason = self.unavailable_reason()
        if reason:
            raise TargetUnavailableError(reason)
        if spec.precision not in self.precisions:
            raise UnknownNameError(f"precision for target {self.name}", spec.precision.value,
                                   [p.value for p in self.precisions])
        if spec.converter is not None and spec.converter not in self.converters:
            raise UnknownNameError(f"converter for target {self.name}", spec.converter, self.converters)
        options = spec.options
        if options is None:
            options = self.Options()
        elif isinstance(options, dict):
            options = self.options(**options)
        elif not isinstance(options, self.Options):
            raise OptionsError(f"target {self.name} takes {self.Options.__name__}, "
                               f"not {type(options).__name__}")
        if spec.int8_io and spec.precision not in self.int8_io_precisions:
            if not self.int8_io_precisions:
                raise ConversionError(f"{self.name}: int8 model I/O is not supported; inputs and outputs are float32")
            raise ConversionError(f"int8 I/O needs int8 precision on {self.name} "
                                  f"(asked for {spec.precision.value} with int8 I/O)")
        if spec.keep_float and spec.precision not in self.float_fallback:
            can = (f"it can at {', '.join(p.value for p in self.float_fallback)}" if self.float_fallback
                   else "it has no per-module quantization")
            raise ConversionError(f"--keep-float leaves modules float in a quantized conversion; {self.name} "
                                  f"{spec.precision.value} cannot ({can})")
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(ExportSpec)}
        valid = ValidSpec(**{**fields, "options": options}, validator=self.name)
        self._validate(valid)
        return valid

    def _validate(self, spec: ValidSpec) -> None:
        """Target-specific rules; spec.options is this target's Options."""

    def require_calibration(self, spec: ExportSpec, calibration: Calibration | None) -> None:
        """The calibration rule, apart from `validate` because the images load after it: a precision that
        calibrates needs them."""
        if self.needs_calibration(spec.precision) and calibration is None:
            raise CalibrationRequiredError(
                f"{self.name} {spec.precision.value} is static quantization and needs calibration images: "
                "pass --calib-data DIR (preprocessed like the model's input) or --calib-data synthetic")

    def validated(self, spec: ExportSpec, calibration: Calibration | None = None) -> ValidSpec:
        """The first line of every `convert`: a spec this target's `validate` made passes as it is (the
        convert sequence validated it), any other is validated here, once; then the calibration rule."""
        if not spec.validated_by(self.name):
            spec = self.validate(spec)
        self.require_calibration(spec, calibration)
        return spec

    def runner(self, artifact: Artifact, **engine_options) -> Runner:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<target {self.name}>"


class BrokenTarget(BaseTarget):
    """A registered target whose module failed to import: listed, never run, and it says why."""

    def __init__(self, name: str, error: BaseException):
        self.name, self.error = name, error

    def unavailable_reason(self) -> str | None:
        return f"target {self.name} failed to load: {type(self.error).__name__}: {first_line(self.error)}"


@lru_cache(maxsize=1)
def registry() -> dict[str, Target]:
    """Every installed target, by name. A plugin that fails to import does not take the others down."""
    from importlib.metadata import entry_points

    found: dict[str, Target] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry.load()
        except Exception as e:
            target = BrokenTarget(entry.name, e)
        found[target.name] = target
    if not found:
        raise TargetUnavailableError(f"no targets are registered (entry-point group {ENTRY_POINT_GROUP}): "
                                     f"{install_line('onnx')} or another target's extra")
    return found


def get_target(name: str) -> Target:
    targets = registry()
    try:
        return targets[name]
    except KeyError:
        raise UnknownTargetError(name, targets) from None


def target_for_path(path: Path) -> Target:
    """The target whose suffix the artifact has."""
    suffix = Path(path).suffix
    for target in registry().values():
        if target.suffix == suffix:
            return target
    raise UnknownNameError("artifact suffix", suffix or "(none)", [t.suffix for t in registry().values()])


def load_artifact(path: Path) -> tuple[Target, Artifact]:
    """An existing file, described by the target its suffix names (check, golden, bench, debug)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"artifact {path} does not exist")
    target = target_for_path(path)
    return target, target.load(path)


def target_option_names() -> dict[str, set[str]]:
    """Which target takes which option: for messages that name the right target."""
    return {t.name: {f.name for f in dataclasses.fields(t.Options)} for t in registry().values()}


__all__ = ["Target", "BaseTarget", "NoOptions", "registry", "get_target", "target_for_path", "load_artifact",
           "target_option_names", "did_you_mean", "ENTRY_POINT_GROUP"]
