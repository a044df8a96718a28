"""The evaluation images, named (not decoded) and cut into shards, and what one artifact measures on
them: size, accuracy, agreement with PyTorch (its latency: `latency.py`).

An evaluation set is one shard of references: a `data.FileShard` (an --eval-data folder's files or a
listing's lines) or a `digits.DigitsShard` (the reference checkpoint's test split). Both answer `len`,
`part(start, stop)` and `read(preprocess)`, so the report cuts either the same way and every task
decodes its own images (`cells.shard_logits`); the driver never holds the pixels."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data import FileShard, list_images, sample_files
from ..errors import DataError, InvalidValueError
from ..parity import compare


def shards(count: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering `count` images in order, `size` at a time."""
    if size < 1:
        raise InvalidValueError(f"--shard-size must be at least 1; got {size}")
    return [(start, min(start + size, count)) for start in range(0, count, size)]


@dataclass(frozen=True)
class EvaluationSet:
    """The evaluation images of a report, by reference: where they come from and all of them as one shard."""

    source: str
    images: object                  # a FileShard or a DigitsShard: len, part(start, stop), read(preprocess)

    def __len__(self) -> int:
        return len(self.images)

    def cut(self, size: int) -> list:
        """Shards of `size` images in order; the same cut wherever they run."""
        return [self.images.part(a, b) for a, b in shards(len(self.images), size)]


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


def evaluation_set(prepared, eval_data: Path | None, limit: int | None) -> EvaluationSet:
    """--eval-data (a folder or a listing file; listed, not read), or the reference checkpoint's own test
    split; `limit` images of it, sampled deterministically (`data.sample_positions`)."""
    if eval_data is not None:
        files, _ = list_images(Path(eval_data).absolute())      # absolute: tasks run in other working folders
        return EvaluationSet(str(eval_data), FileShard(tuple(sample_files(files, limit))))
    if prepared.reference is not None:
        return EvaluationSet(*prepared.reference.shard("test", limit))
    raise DataError(f"{prepared.name} has no reference data: pass --eval-data DIR (an ImageFolder tree) "
                    "or --eval-data LIST.csv (path,label lines)")


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
