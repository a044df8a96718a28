"""Calibration as every converter runs it: batches validated against the export size, counted for the
notes, and pushed through a PT2E observed graph (what `prepare_pt2e` returns: observers in place) that
is batch-dynamic where the model exports that way (whole batches at once: about 3x faster than one
image at a time)."""
from __future__ import annotations

import torch

from ..errors import CalibrationRequiredError, ConversionError
from ..spec import Calibration

EXPORT_BATCH = 2       # the batch the calibration graph is exported at (the batch dim is dynamic)


def validate_batch(batch: torch.Tensor, image_size: int) -> None:
    """A calibration batch must be [B, 3, S, S] at the export size S (the canonical layout, whatever the file's)."""
    expected = (3, image_size, image_size)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ConversionError(f"calibration batch of shape {tuple(batch.shape)} does not fit the model input "
                              f"[B, {', '.join(map(str, expected))}] (calibrate at the export image size)")


def no_images() -> CalibrationRequiredError:
    return CalibrationRequiredError("the calibration data holds no images; "
                                    "pass --calib-data DIR or --calib-data synthetic")


def source_note(calibration: Calibration, samples: int) -> str:
    """'synthetic (32 images)': what a report says the int8 file was calibrated on."""
    return f"{calibration.source} ({samples} images)"


def calibration_graph(module: torch.nn.Module, example: tuple,
                      transform=lambda exported: exported) -> tuple[torch.fx.GraphModule, bool]:
    """The exported graph to observe: batch-dynamic when the model exports that way, else the batch-1
    graph; `transform` rewrites the exported program first (a converter's decompositions).
    -> (graph module, batched?)"""
    shape = tuple(example[0].shape)
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        probe = (torch.zeros((EXPORT_BATCH, *shape[1:])),)
        return transform(torch.export.export(module, probe, dynamic_shapes=({0: batch},))).module(), True
    except Exception:            # a model whose code fixes the batch: calibrate one image at a time
        return transform(torch.export.export(module, example)).module(), False


def observe(observed: torch.nn.Module, calibration: Calibration, image_size: int, batched: bool,
            nhwc: bool = False) -> int:
    """Run every calibration batch through a PT2E observed graph; -> images seen (raises when none)."""
    seen = 0
    with torch.no_grad():
        for batch in calibration.batches:
            validate_batch(batch, image_size)
            batch = batch.float()
            batch = batch.permute(0, 2, 3, 1) if nhwc else batch
            for chunk in ((batch,) if batched else batch.split(1)):
                observed(chunk)
            seen += len(batch)
    if seen == 0:
        raise no_images()
    return seen


def quantized_graph(module: torch.nn.Module, example: tuple, quantizer, calibration: Calibration,
                    nhwc: bool = False, transform=lambda exported: exported,
                    fold: bool = False) -> tuple[torch.fx.GraphModule, bool, int]:
    """Static PT2E as every converter runs it: export (batch-dynamic where the model allows), observe with
    `quantizer`, run the calibration through it, `convert_pt2e` (`fold`: weights stored quantized;
    either way the graph runs in PyTorch as the file's replica). -> (quantized graph, batched?, images seen)"""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph, batched = calibration_graph(module, example, transform)
    observed = prepare_pt2e(graph, quantizer)                   # the graph with observers, to calibrate
    image_size = example[0].shape[2]                             # [1, 3, S, S] or [1, S, S, 3]
    seen = observe(observed, calibration, image_size, batched, nhwc)
    return convert_pt2e(observed, fold_quantize=fold), batched, seen
