"""mvdeploy: MobileViT and Swin from PyTorch to phones, with proof of parity.

The public Python API (the CLI `mvdeploy` is a thin layer over the same calls):

    import mobilevit_deploy as mvd
    result = mvd.convert("mobilevit_xxs", target="onnx", precision="fp32", out="out/")
    print(result.artifact.path, result.report.passed, result.report.metrics.max_rel)
    report = mvd.check("out/mobilevit_xxs-fp32.onnx", model="mobilevit_xxs")

Heavy libraries (torch, converters' toolchains) are imported inside these functions, so
`import mobilevit_deploy` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MvDeployError, ParityError
from .versions import version_of

if TYPE_CHECKING:                                   # pragma: no cover
    import torch

    from .parity import ParityReport
    from .pipeline import ConvertResult, PreparedModel
    from .targets import Target

__version__ = version_of("mvdeploy", missing="0+unknown")


def create_model(name: str, num_classes: int = 1000, image_size: int | None = None):
    """A built-in model (see `mvdeploy models`) with a seeded random init, in train mode."""
    from .models import create_model as _create
    return _create(name, num_classes=num_classes, image_size=image_size)


def prepare_model(name: str, weights: str | Path | None = None, num_classes: int | None = None,
                  image_size: int | None = None) -> "PreparedModel":
    """A built-in model with its weights (a file, "random", or None for its reference checkpoint)."""
    from .pipeline import prepare_model as _prepare
    return _prepare(name, weights, num_classes, image_size)


def get_target(name: str) -> "Target":
    """A registered target by name ("onnx", "tflite", "coreml", ...)."""
    from .targets import get_target as _get
    return _get(name)


def convert(model: "str | PreparedModel | torch.nn.Module", target: str = "tflite", precision: str = "fp32", *,
            out: str | Path = "mvdeploy-out", weights: str | Path | None = None, image_size: int | None = None,
            num_classes: int | None = None, calib_data: str | Path | None = None, data: str | Path | None = None,
            layout: str = "nchw", converter: str | None = None, check: bool = True, fuse: bool = True,
            strict: bool = True, name: str | None = None, preprocess=None, **options) -> "ConvertResult":
    """Convert a model for a target and check parity against PyTorch.

    `model`: a built-in name, a PreparedModel, or your own torch.nn.Module (one [N, 3, H, W] image batch
    in, logits out; give `image_size`, and `preprocess=Preprocess(...)` if it expects mean/std). `options`: the target's own options (e.g. ios=18 for
    coreml); a name the target does not take is an OptionsError. `calib_data`: a folder or "synthetic"
    for precisions that calibrate (default: the reference checkpoint's training images).
    With `strict` (the default) a failed parity check raises ParityError, carrying the report; the
    failed file is still written, with its report, for inspection.
    """
    from .calibration import calibration_for
    from .errors import InvalidValueError
    from .pipeline import PreparedModel, convert as _convert, parity_inputs, prepare_model as _prepare, prepare_module
    from .spec import Layout, Precision, parse_choice
    from .targets import get_target as _get

    if isinstance(model, str):
        prepared = _prepare(model, weights, num_classes, image_size)
    elif isinstance(model, PreparedModel):
        prepared = model
    else:
        if image_size is None:
            raise InvalidValueError("a custom module needs image_size= (the square input side it is exported at)")
        prepared = prepare_module(model, image_size, name=name, preprocess=preprocess)
    chosen = _get(target)
    spec = prepared.spec(parse_choice(Precision, precision, "precision"), layout=parse_choice(Layout, layout, "layout"),
                         converter=converter,
                         options=chosen.options(**options))
    calibration = None
    if chosen.needs_calibration(spec.precision):
        calibration = calibration_for(prepared, calib_data)
    inputs = parity_inputs(prepared, Path(data) if data is not None else None) if check else None
    result = _convert(prepared, chosen, spec, Path(out), calibration=calibration, inputs=inputs,
                      check=check, do_fuse=fuse)
    if strict and result.report is not None and not result.report.passed:
        raise ParityError(result.report)
    return result


def check(artifact: str | Path, model: str, *, weights: str | Path | None = None, num_classes: int | None = None,
          data: str | Path | None = None, strict: bool = False) -> "ParityReport":
    """Check an exported file (also one mvdeploy did not make) against the PyTorch model; writes
    <artifact>.parity.json. With `strict`, a failed check raises ParityError."""
    from .pipeline import check_file

    _, report = check_file(Path(artifact), model, weights, num_classes, Path(data) if data is not None else None)
    if strict and not report.passed:
        raise ParityError(report)
    return report


__all__ = ["__version__", "MvDeployError", "ParityError", "create_model", "prepare_model", "get_target",
           "convert", "check"]
