"""scikit-learn's handwritten digits as real images: the data of the reference checkpoints.

1,797 gray 8x8 digits (levels 0..16), 10 classes, bundled with scikit-learn: no download. A digit
becomes what a PNG of it holds, an 8x8 8-bit gray image (level * 255 / 16, rounded), and then takes
the path every image takes: `preprocess_image` with the model's `Preprocess` (RGB, bicubic resize of
the shorter side, center crop, [0, 1], mean/std). So a digit written by `export_digits_imagefolder`
and read back by `load_folder` is the very tensor training saw, and a converted model fed digit
images by an app sees what the PyTorch model saw.

The 1,797 digits and the recorded split (seed 0, a quarter for test) ship with the package
(`checkpoints/digits.npz`, 46 KB: load_digits' levels and targets, the test indices
`train_test_split` gives), so the reference checkpoints' parity and evaluation images need no
scikit-learn; another seed (scripts/train_digits.py --split-seed) imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .data import DecodedShard, LoadedImages, collate_skip, decoded, preprocess_image, read_dataset, sample_positions
from .errors import DataError
from .spec import Preprocess

DIGITS_SOURCE = "sklearn.datasets.load_digits (UCI optdigits, 1,797 images of 8x8, levels 0..16, 10 classes)"
DIGIT_LABELS = tuple(str(d) for d in range(10))   # class index i is the digit i
SPLIT_SEED = 0                                     # random_state of the recorded train/test split
TEST_FRACTION = 0.25                               # 450 test images, 1,347 train images
SPLITS = ("train", "test")
BUNDLED = Path(__file__).parent / "checkpoints" / "digits.npz"   # levels, labels, test_seed0 (SPLIT_SEED's test indices)


def digits_to_uint8(levels: np.ndarray) -> np.ndarray:
    """scikit-learn's gray levels 0..16 -> uint8 0..255 (level * 255 / 16, rounded): what a PNG stores."""
    return np.rint(np.asarray(levels, dtype=np.float64) * (255 / 16)).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class DigitsPart:
    """One side of the split, in load_digits() order."""

    images: np.ndarray      # [N, 8, 8] uint8, 0..255, white digit on black
    labels: np.ndarray      # [N] int64, 0..9
    indices: np.ndarray     # [N] positions in load_digits(), ascending

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class DigitsSplit:
    train: DigitsPart
    test: DigitsPart
    seed: int               # random_state given to train_test_split
    test_fraction: float

    def part(self, split: str) -> DigitsPart:
        if split not in SPLITS:
            raise DataError(f"unknown digits split '{split}' (known: {', '.join(SPLITS)})")
        return self.train if split == "train" else self.test


def digits_split(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> DigitsSplit:
    """The digits, split by scikit-learn's `train_test_split`, stratified by class; the same seed
    always gives the same split. The recorded split is read from the package (`BUNDLED`)."""
    if (seed, test_fraction) == (SPLIT_SEED, TEST_FRACTION):
        with np.load(BUNDLED) as bundled:
            levels, labels, test = bundled["levels"], bundled["labels"].astype(np.int64), bundled["test_seed0"]
        test = test.astype(np.int64)
        train = np.setdiff1d(np.arange(len(labels)), test)
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        levels, labels = digits.images, digits.target.astype(np.int64)
        train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                       random_state=seed, stratify=labels)
        train, test = np.sort(train), np.sort(test)
    images = digits_to_uint8(levels)                                   # [1797, 8, 8]
    return DigitsSplit(DigitsPart(images[train], labels[train], train),
                       DigitsPart(images[test], labels[test], test), seed, test_fraction)


def digit_image(pixels: np.ndarray):
    """[8, 8] uint8 -> a PIL gray image, the form the PNG export writes."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


class DigitsDataset(Dataset):
    """(image [3, S, S] in the model's preprocessing, label) per digit, like `ImageDataset`."""

    def __init__(self, part: DigitsPart, pre: Preprocess):
        self.part = part
        self.pre = pre

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return preprocess_image(digit_image(self.part.images[i]), self.pre), int(self.part.labels[i])


def digits_loader(part: DigitsPart, pre: Preprocess, batch_size: int, shuffle: bool = False,
                  seed: int = 0, drop_last: bool = False) -> DataLoader:
    """Batches of (images [B, 3, S, S], labels [B], skipped) through `collate_skip`, as calibration reads.
    A shuffled loader draws its order from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(DigitsDataset(part, pre), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      drop_last=drop_last, collate_fn=collate_skip, num_workers=0)


def read_digits(split: str, pre: Preprocess, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION,
                progress: str | None = None) -> LoadedImages:
    """One side of the split as preprocessed tensors, in order, like `load_folder` reads a folder."""
    part = digits_split(seed, test_fraction).part(split)
    images, labels, skipped = read_dataset(DigitsDataset(part, pre), batch_size=64, progress=progress)
    return LoadedImages(images, labels, f"digits {split} split (seed {seed})", list(DIGIT_LABELS), skipped)


@dataclass(frozen=True)
class DigitsShard:
    """Digits named by their positions in one side of the split, like a `FileShard` names files: the
    digits ship with the package, so every process that has mvdeploy reads them where the shard runs."""

    split: str
    positions: tuple[int, ...]              # indices into digits_split(seed).part(split)
    seed: int = SPLIT_SEED

    def __len__(self) -> int:
        return len(self.positions)

    def part(self, start: int, stop: int) -> "DigitsShard":
        return DigitsShard(self.split, self.positions[start:stop], self.seed)

    def read(self, pre: Preprocess) -> DecodedShard:
        dataset = DigitsDataset(digits_split(self.seed).part(self.split), pre)
        return decoded([dataset[i] for i in self.positions], [f"digit {i}" for i in self.positions])


def digits_shard(split: str, count: int | None = None, seed: int = 0) -> tuple[str, DigitsShard]:
    """(source, shard) of `count` digits of one side of the recorded split, sampled as `read_digits(...).take(count,
    seed)` samples them: the same images in the same order."""
    total = len(digits_split().part(split))
    return f"digits {split} split (seed {SPLIT_SEED})", DigitsShard(split, tuple(sample_positions(total, count, seed)))


def export_digits_imagefolder(root: Path, split: str = "test", seed: int = SPLIT_SEED,
                              test_fraction: float = TEST_FRACTION) -> int:
    """Write one side of the split as an ImageFolder tree, root/<digit>/digit-<index>.png; -> images written.

    The PNGs are the 8x8 gray digits themselves; `load_folder` with a model's preprocessing turns
    them into exactly the tensors `DigitsDataset` gives. `root` must be new or empty.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root} exists and is not an empty folder; export the digits into a new or empty folder")
    part = digits_split(seed, test_fraction).part(split)
    for label in DIGIT_LABELS:
        (root / label).mkdir(parents=True, exist_ok=True)
    for pixels, label, index in zip(part.images, part.labels, part.indices):
        digit_image(pixels).save(root / DIGIT_LABELS[label] / f"digit-{index:04d}.png")
    return len(part)


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 150) -> tuple[int, Tensor]:
    """Top-1 of `model` (switched to eval mode) on preprocessed images -> (correct, predictions [N])."""
    model.eval()
    predictions = torch.cat([model(images[i:i + batch_size]).argmax(dim=1)
                             for i in range(0, len(images), batch_size)])
    return int((predictions == labels).sum()), predictions
