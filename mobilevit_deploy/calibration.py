"""Calibration images for static quantization, chosen in one place.

`calibration_for` decides where they come from: `--calib-data` (a folder, or "synthetic"), else the
reference checkpoint's own training split; never images that evaluation reads. Sampling is
deterministic (seeded), images go through the model's own preprocessing, and the batches come from
the same Dataset / DataLoader / collate path as evaluation and training.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .data import list_images, load_folder, synthetic_images
from .errors import DataError
from .spec import Calibration

SYNTHETIC = "synthetic"
DEFAULT_SAMPLES = 200
BATCH = 16

UNVALIDATED_NOTE = ("int8 calibrated on synthetic images: its accuracy on real data is unvalidated; "
                    "pass --calib-data DIR with real images")


def _batched(images: torch.Tensor, source: str, skipped: int = 0, files: tuple = ()) -> Calibration:
    return Calibration(tuple(torch.split(images, BATCH)), source, len(images), skipped=skipped, files=files)


def calibration_for(prepared, calib_data: str | Path | None = None, eval_data: Path | None = None,
                    samples: int = DEFAULT_SAMPLES, seed: int = 0, progress: bool = False) -> Calibration:
    """`calib_data`: a folder (flat or ImageFolder tree) or "synthetic"; None: the reference checkpoint's
    train split (disjoint from its test split, which parity and evaluation read) unless the user
    evaluates on a folder of their own. Files of `eval_data` are never used for calibration."""
    if samples < 1:
        raise DataError(f"--calib-samples must be at least 1 (got {samples})")
    if calib_data is None:
        if prepared.reference is None or eval_data is not None:
            raise DataError("int8 needs calibration images: pass --calib-data DIR (real images"
                            + (", disjoint from --eval-data" if eval_data is not None else "")
                            + ") or --calib-data synthetic")
        loaded = prepared.reference.read("train", prepared.preprocess, samples, seed)
        return _batched(loaded.images, loaded.source)
    if str(calib_data) == SYNTHETIC:
        return _batched(synthetic_images(samples, prepared.image_size, prepared.preprocess, seed=seed + 1), SYNTHETIC)
    exclude = {f.path.resolve() for f in list_images(Path(eval_data))[0]} if eval_data is not None else None
    loaded = load_folder(Path(calib_data), prepared.preprocess, count=samples, seed=seed, exclude=exclude,
                         progress="reading calibration images" if progress else None)
    return _batched(loaded.images, str(calib_data), loaded.skipped, loaded.files)

