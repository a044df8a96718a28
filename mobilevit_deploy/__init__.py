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
            out: str | Path = "mvdeploy-out", weights: str | Path | None = None, weights_format: str | None = None,
            image_size: int | None = None, num_classes: int | None = None, calib_data: str | Path | None = None,
            calib_samples: int | None = None, data: str | Path | None = None, layout: str = "nchw",
            converter: str | None = None, int8_io: bool = False, check: bool = True, fuse: bool = True,
            strict: bool = True, name: str | None = None, preprocess=None, keep_float=None,
            max_accuracy_drop: float | None = None, eval_data: str | Path | None = None,
            **options) -> "ConvertResult":
    """Convert a model for a target and check parity against PyTorch.

    `model`: a built-in name, a PreparedModel, or your own torch.nn.Module (one [N, 3, H, W] image batch
    in, logits out; give `image_size`, and `preprocess=Preprocess(...)` if it expects mean/std). `options`: the target's own options (e.g. ios=18 for
    coreml); a name the target does not take is an OptionsError. `calib_data`: a folder or "synthetic"
    for precisions that calibrate (default: the reference checkpoint's training images); `calib_samples`:
    how many (default: calibration.DEFAULT_SAMPLES). `data`: real images for parity. `keep_float`: modules
    (qualified names, a list or "a.b,c.d") a quantized conversion leaves in float (tflite and executorch
    int8, coreml's compressed precisions); the file is checked for it and its notes and report list them.
    `max_accuracy_drop`: points of top-1 an int8 file may lose against PyTorch fp32 on `eval_data`
    (default: the reference checkpoint's test split); the noisiest layers are kept float one by one until
    it holds (a budget that cannot be met raises BudgetError and writes nothing). The same sequence as
    `mvdeploy convert` (`pipeline.convert_model`), so the same arguments check parity on the same images.
    With `strict` (the default) a failed parity check raises ParityError, carrying the report; the
    failed file is still written, with its report, for inspection.
    """
    from .calibration import DEFAULT_SAMPLES
    from .pipeline import convert_model
    from .quantization.budget import budget_for

    run = convert_model(model, target, [precision], out, weights=weights, weights_format=weights_format,
                        image_size=image_size, num_classes=num_classes, name=name, preprocess=preprocess,
                        layout=layout, int8_io=int8_io, converter=converter, options=options,
                        calib_samples=DEFAULT_SAMPLES if calib_samples is None else calib_samples,
                        calib_data=calib_data, data=Path(data) if data is not None else None, check=check,
                        do_fuse=fuse, keep_float=keep_float, budget=budget_for(max_accuracy_drop, eval_data))
    result = run.results[0]
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
