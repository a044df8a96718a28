"""Images -> the model's input tensors: folders, Dataset / DataLoader / collate, synthetic inputs.

One path serves calibration, evaluation and parity: every image goes through the model's own
`Preprocess` (resize the shorter side, center crop, scale to [0, 1], mean/std).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .errors import DataError
from .spec import Preprocess

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class ImageFile:
    path: Path
    label: int | None       # class index in an ImageFolder tree, else None


def list_images(root: Path) -> tuple[list[ImageFile], list[str]]:
    """Image files under `root`, sorted: an ImageFolder tree (class = subfolder) or a flat folder.

    Returns (files, class names); class names are empty for a flat folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:
        files = [ImageFile(p, i) for i, c in enumerate(classes) for p in sorted((root / c).rglob("*"))
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [ImageFile(p, None) for p in sorted(root.iterdir())
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, flat or one folder per class)")
    return files, classes


def sample_files(files: Sequence[ImageFile], count: int | None, seed: int = 0) -> list[ImageFile]:
    """A deterministic sample of `count` files (all, in order, when count is None or large enough)."""
    if count is None or count >= len(files):
        return list(files)
    picked = sorted(random.Random(seed).sample(range(len(files)), count))
    return [files[i] for i in picked]


# What a reimplementation of each resize needs, exactly (bundle.json "preprocessing.resampling"; the apps'
# Preprocessing.kt / Preprocessing.swift implement "bicubic" step for step, and tests run the Kotlin one
# against preprocess_image). Pillow is the reference implementation.
RESAMPLING = {
    "bicubic": {
        "name": "pillow-bicubic",
        "reference": "PIL.Image.resize(size, Image.BICUBIC), Pillow's ImagingResample",
        "kernel": "cubic convolution, a = -0.5, support 2",
        "antialias": "when downscaling, the support widens by the scale factor (in / out); weights normalized",
        "passes": "horizontal, then vertical; a pass is skipped when that side keeps its size",
        "arithmetic": "weights in 22-bit fixed point (round half away from zero), sums start at 2^21, "
                      "each pass's result shifted down 22 bits and clipped to 0..255",
        "size": "shorter side to `resize`; the other side round(side * resize / shorter), half to even; "
                "both at least `crop`",
        "crop": "left = (width - crop) // 2, top = (height - crop) // 2",
        "channels": "RGB, alpha dropped; then / 255, minus mean, over std, in float32",
    },
}


def resampling(interpolation: str) -> dict:
    """The exact description of a resize the apps implement (RESAMPLING), or DataError."""
    try:
        return RESAMPLING[interpolation]
    except KeyError:
        raise DataError(f"the sample apps implement {', '.join(RESAMPLING)} resizing, not {interpolation!r}") from None


def preprocess_image(image, pre: Preprocess) -> Tensor:
    """PIL image -> [3, crop, crop] float32 with the model's preprocessing."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = pre.resize / min(w, h)
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[pre.interpolation]
    image = image.resize((max(pre.crop, round(w * scale)), max(pre.crop, round(h * scale))), resample)
    w, h = image.size
    left, top = (w - pre.crop) // 2, (h - pre.crop) // 2
    image = image.crop((left, top, left + pre.crop, top + pre.crop))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)   # [3, H, W]
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


class ImageDataset(Dataset):
    """Preprocessed images; an unreadable file yields None, which `collate_skip` drops and counts."""

    def __init__(self, files: Sequence[ImageFile], pre: Preprocess):
        self.files = list(files)
        self.pre = pre

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        f = self.files[i]
        try:
            with Image.open(f.path) as image:
                x = preprocess_image(image, self.pre)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        return x, (-1 if f.label is None else f.label)


def collate_skip(batch):
    """Stack the readable samples; report how many were skipped. -> (images, labels, skipped)."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([g[0] for g in good])                         # [B, 3, H, W]
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)      # [B]
    return images, labels, skipped


@dataclass
class LoadedImages:
    """Images read from a folder, with what the reports must say about them."""

    images: Tensor                 # [N, 3, H, W] preprocessed
    labels: Tensor                 # [N], -1 where unlabelled
    source: str
    classes: list[str] = field(default_factory=list)
    skipped: int = 0               # unreadable files
    files: tuple[Path, ...] = ()   # the files sampled (resolved), when read from a folder

    def take(self, count: int | None, seed: int = 0) -> "LoadedImages":
        """A deterministic sample of `count` images (all when count is None or large enough)."""
        if count is None or count >= len(self.images):
            return self
        picked = torch.tensor(sorted(random.Random(seed).sample(range(len(self.images)), count)))
        return LoadedImages(self.images[picked], self.labels[picked], self.source, self.classes, self.skipped)


def load_folder(root: Path, pre: Preprocess, count: int | None = None, seed: int = 0,
                batch_size: int = 32, progress: str | None = None,
                exclude: set[Path] | None = None) -> LoadedImages:
    """Read (a deterministic sample of) a folder through Dataset + DataLoader, with a progress bar."""
    files, classes = list_images(root)
    if exclude:
        files = [f for f in files if f.path.resolve() not in exclude]
    files = sample_files(files, count, seed)
    images, labels, skipped = read_dataset(ImageDataset(files, pre), batch_size, progress)
    if not len(images):
        raise DataError(f"none of the {len(files)} image files in {root} could be read")
    return LoadedImages(images, labels, str(root), classes, skipped, tuple(f.path.resolve() for f in files))


def read_dataset(dataset: Dataset, batch_size: int = 32, progress: str | None = None) -> tuple[Tensor, Tensor, int]:
    """Every sample of `dataset`, in order, through DataLoader + `collate_skip`, with a progress bar.

    -> (images [N, 3, H, W], labels [N], skipped); images is empty when no sample could be read.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_skip, num_workers=0)
    images, labels, skipped = [], [], 0
    from .progress import progress_bar
    with progress_bar(progress or "reading images", total=len(dataset), enabled=progress is not None) as advance:
        for x, y, s in loader:
            skipped += s
            if len(x):
                images.append(x)
                labels.append(y)
            advance(len(y) + s)
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    return torch.cat(images), torch.cat(labels), skipped


def synthetic_images(count: int, size: int, pre: Preprocess, seed: int = 0) -> Tensor:
    """Seeded stand-ins for photos: smooth colour fields plus texture, in [0, 1], then preprocessed.

    Pure noise is unlike any photo (flat spectrum, no large structures); these mix low-frequency
    blobs with a little noise so activations look more like real images. -> [count, 3, size, size]
    """
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    texture = torch.rand(count, 3, size, size, generator=g)
    x = (0.8 * smooth + 0.2 * texture).clamp(0, 1)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def read_labels(path: Path) -> list[str]:
    """Class names, one per line (blank lines skipped), from a UTF-8 text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"labels file {path} is not readable UTF-8 text ({type(e).__name__})") from None
    if "\x00" in text:
        raise DataError(f"labels file {path} is not a text file (it holds NUL bytes)")
    return [line.strip() for line in text.splitlines() if line.strip()]
