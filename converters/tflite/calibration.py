"""Calibration images as both TFLite backends take them: checked against the export size, counted for the notes."""
from __future__ import annotations

import torch

from mobilevit_deploy.errors import CalibrationRequiredError, ConversionError
from mobilevit_deploy.spec import Calibration


def check_batch(batch: torch.Tensor, image_size: int) -> None:
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
