"""The evaluation images, and what one artifact measures on them: size, accuracy, agreement with
PyTorch (its latency: `latency.py`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data import LoadedImages, load_folder
from ..errors import DataError
from ..parity import compare


@dataclass
class VariantResult:
    """One (model, target, precision) row of the report. Every figure is re-computable from the file."""

    model: str
    target: str
    precision: str
    artifact: str
    engine: str
    size_bytes: int
    size_ratio: float | None           # size / the same target's fp32 size
    latency_ms_median: float | None
    latency_ms_p90: float | None
    latency_note: str | None           # why latency is missing, when it is
    accuracy: float | None             # top-1 on the evaluation labels
    accuracy_delta: float | None       # accuracy - PyTorch fp32 accuracy, in points (x100)
    top1_agreement: float
    cosine_min: float
    cosine_mean: float
    sqnr_db: float
    parity_passed: bool | None
    notes: list[str] = field(default_factory=list)
    arm64: list[dict] = field(default_factory=list)   # parity on the ARM64 build, per emulated CPU (parity images)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluation_images(prepared, eval_data: Path | None, limit: int | None) -> LoadedImages:
    """--eval-data (an ImageFolder), or the reference checkpoint's own test split."""
    if eval_data is not None:
        return load_folder(Path(eval_data), prepared.preprocess, count=limit, progress="reading evaluation images")
    if prepared.reference is not None:
        return prepared.reference.read("test", prepared.preprocess, limit)
    raise DataError(f"{prepared.name} has no reference data: pass --eval-data DIR (an ImageFolder tree)")


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-1 accuracy; None when the images carry no labels (-1)."""
    if len(labels) == 0 or np.any(labels < 0):
        return None
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                    reference_accuracy: float | None) -> dict:
    m = compare(reference, logits)
    acc = accuracy(logits, labels)
    return {
        "accuracy": acc,
        "accuracy_delta": None if acc is None or reference_accuracy is None else 100 * (acc - reference_accuracy),
        "top1_agreement": m.top1_agreement, "cosine_min": m.cosine_min, "cosine_mean": m.cosine_mean,
        "sqnr_db": m.sqnr_db,
    }
