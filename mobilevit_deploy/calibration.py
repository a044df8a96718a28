"""Calibration images for static quantization: a folder of real images, or an explicit "synthetic".

Sampling is deterministic (seeded), images go through the model's own preprocessing, and the
batches come from the same Dataset / DataLoader / collate path as evaluation and training.
"""
from __future__ import annotations

from pathlib import Path

import torch

from converters.base import Calibration
from .data import load_folder, synthetic_images
from .spec import Precision

SYNTHETIC = "synthetic"
DIGITS = "digits"                 # the digits train split: the reference checkpoints' own data
DEFAULT_SAMPLES = 200
BATCH = 16

# Precisions whose conversion runs calibration images through the model.
NEEDS_CALIBRATION = {Precision.int8: ("tflite",), Precision.w8a8: ("coreml",)}

UNVALIDATED_NOTE = ("int8 calibrated on synthetic images: its accuracy on real data is unvalidated; "
                    "pass --calib-data DIR with real images")


def needs_calibration(target: str, precision: Precision) -> bool:
    return target in NEEDS_CALIBRATION.get(precision, ())


def load_calibration(source: str | Path, prepared, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                     progress: bool = False) -> Calibration:
    """`source` is a folder (flat or ImageFolder tree), "synthetic", or "digits" (the train split,
    which never overlaps the test split that evaluation and parity read)."""
    if str(source) == SYNTHETIC:
        images = synthetic_images(samples, prepared.image_size, prepared.preprocess, seed=seed + 1)
        return Calibration(tuple(torch.split(images, BATCH)), SYNTHETIC, len(images))
    if str(source) == DIGITS:
        from .digits import read_digits
        loaded = read_digits("train", prepared.preprocess).take(samples, seed)
        return Calibration(tuple(torch.split(loaded.images, BATCH)), loaded.source, len(loaded.images))
    loaded = load_folder(Path(source), prepared.preprocess, count=samples, seed=seed,
                         progress="reading calibration images" if progress else None)
    return Calibration(tuple(torch.split(loaded.images, BATCH)), str(source), len(loaded.images),
                       skipped=loaded.skipped)
