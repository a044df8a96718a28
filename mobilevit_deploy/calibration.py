"""Calibration images for static quantization, chosen in one place.

`calibration_for` decides where they come from: `--calib-data` (a folder, or "synthetic"), else the
reference checkpoint's own training split; never images that evaluation reads (`require_disjoint`).
Sampling is deterministic (seeded), images go through the model's own preprocessing, and the batches
come from the same Dataset / DataLoader / collate path as evaluation and training. Light at import
(torch and the data module load inside the functions), so the CLI can show DEFAULT_SAMPLES.
"""
from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .spec import Calibration

SYNTHETIC = "synthetic"
DEFAULT_SAMPLES = 200
BATCH = 16

UNVALIDATED_NOTE = ("int8 calibrated on synthetic images: its accuracy on real data is unvalidated; "
                    "pass --calib-data DIR with real images")


def _batched(images, source: str, asked: dict, skipped: int = 0, files: tuple = ()) -> Calibration:
    """`images` [N, 3, H, W] (a torch tensor) as batches of BATCH; `asked`: the arguments that drew them."""
    import torch

    return Calibration(tuple(torch.split(images, BATCH)), source, len(images), skipped=skipped, files=files,
                       asked=asked)


def calibration_for(prepared, calib_data: str | Path | None = None, eval_data: Path | None = None,
                    samples: int = DEFAULT_SAMPLES, seed: int = 0, progress: bool = False) -> Calibration:
    """`calib_data`: a folder (flat or ImageFolder tree) or "synthetic"; None: the reference checkpoint's
    train split (disjoint from its test split, which parity and evaluation read) unless the user
    evaluates on a folder of their own. A `calib_data` folder sharing an image with `eval_data` is refused."""
    from .data import load_folder, synthetic_images

    if samples < 1:
        raise DataError(f"--calib-samples must be at least 1 (got {samples})")
    asked = {"calib_data": None if calib_data is None else str(calib_data), "samples": samples, "seed": seed}
    if calib_data is None:
        if prepared.reference is None or eval_data is not None:
            raise DataError("int8 needs calibration images: pass --calib-data DIR (real images"
                            + (", disjoint from --eval-data" if eval_data is not None else "")
                            + ") or --calib-data synthetic")
        loaded = prepared.reference.read("train", prepared.preprocess, samples, seed)
        return _batched(loaded.images, loaded.source, asked)
    if str(calib_data) == SYNTHETIC:
        return _batched(synthetic_images(samples, prepared.image_size, prepared.preprocess, seed=seed + 1), SYNTHETIC,
                        asked)
    require_disjoint(calib_data, eval_data)
    loaded = load_folder(Path(calib_data), prepared.preprocess, count=samples, seed=seed,
                         progress="reading calibration images" if progress else None)
    return _batched(loaded.images, str(calib_data), asked, loaded.skipped, loaded.files)


def require_disjoint(calib_data: str | Path | None, eval_data: Path | None) -> None:
    """Refuse calibration images that evaluation also reads (the same file, by its resolved path): an
    accuracy measured on images the quantizer was fitted to says nothing. Nothing to refuse for the
    reference split or synthetic images."""
    if calib_data is None or eval_data is None or str(calib_data) == SYNTHETIC:
        return
    from .data import list_images

    evaluation = {f.path.resolve() for f in list_images(Path(eval_data))[0]}
    calibration = [f.path.resolve() for f in list_images(Path(calib_data))[0]]
    shared = sum(path in evaluation for path in calibration)
    if shared:
        raise DataError(f"the evaluation and calibration sets overlap: {shared} of the {len(calibration)} images "
                        f"in --calib-data {calib_data} are also in --eval-data {eval_data}; they must be disjoint")


def calibration_again(prepared, record: dict) -> Calibration:
    """The calibration a parity report recorded (`Calibration.record`), drawn again: the same images in
    the same order, so the int8 replica of an existing file gets the same scales."""
    return calibration_for(prepared, record.get("calib_data"), samples=int(record["samples"]),
                           seed=int(record.get("seed", 0)))
