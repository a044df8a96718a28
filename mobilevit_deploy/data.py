"""Images -> the model's input tensors: folders and listing files, Dataset / DataLoader / collate,
shards of files decoded where they run, synthetic inputs.

One path serves calibration, evaluation and parity: every image goes through the model's own
`Preprocess` (resize the shorter side, center crop, scale to [0, 1], mean/std).

A set of images is a folder (an ImageFolder tree: one subfolder per class; or flat, unlabelled) or a
listing file (`LISTING_FORMAT`): `list_images` reads either, without decoding anything.
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


LISTING_FORMAT = """\
A listing file (.csv or .txt, UTF-8) names one image per line as `path,label`:
- the label is after the last comma; a relative path is relative to the listing's own folder;
- labels that are all whole numbers are class indices; otherwise they are class names, indexed in
  sorted order (as an ImageFolder tree indexes its subfolders);
- an optional first line `path,label` is a header; blank lines and lines starting with # are skipped;
- images are read in the listing's order; every path must exist (checked before any work)."""


def list_images(root: Path) -> tuple[list[ImageFile], list[str]]:
    """Image files of `root`: an ImageFolder tree (class = subfolder) or a flat folder, sorted; or a
    listing file (`read_listing`), in its order. Nothing is decoded.

    Returns (files, class names); class names are empty for a flat folder.
    """
    root = Path(root)
    if root.is_file():
        return read_listing(root)
    if not root.is_dir():
        raise DataError(f"image folder or listing file {root} does not exist")
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


def read_listing(path: Path) -> tuple[list[ImageFile], list[str]]:
    """(files, class names) of a listing file (`LISTING_FORMAT`); class names are empty when the labels
    are indices. A malformed line or a path that does not exist is a DataError naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"listing file {path} is not readable UTF-8 text ({type(e).__name__})") from None
    rows: list[tuple[int, str, str]] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#") or (not rows and line.replace(" ", "").lower() == "path,label"):
            continue
        name, comma, label = line.rpartition(",")
        if not comma or not name.strip() or not label.strip():
            raise DataError(f"listing file {path}, line {number}: expected `path,label`, got {line[:80]!r}")
        rows.append((number, name.strip(), label.strip()))
    if not rows:
        raise DataError(f"listing file {path} names no images ({LISTING_FORMAT.splitlines()[1].strip()})")
    files = [path.parent / name for _, name, _ in rows]
    missing = [(number, name) for (number, name, _), f in zip(rows, files) if not f.is_file()]
    if missing:
        number, name = missing[0]
        raise DataError(f"listing file {path}: {len(missing)} of its {len(rows)} images do not exist "
                        f"(first: line {number}, {name})")
    labels = [label for _, _, label in rows]
    if all(label.isdigit() for label in labels):
        return [ImageFile(f, int(label)) for f, label in zip(files, labels)], []
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return [ImageFile(f, index[label]) for f, label in zip(files, labels)], classes


def sample_positions(total: int, count: int | None, seed: int = 0) -> list[int]:
    """A deterministic sample of `count` of range(total), in ascending order (all when count is None or
    large enough): how every image set is cut down to --eval-limit or --calib-samples."""
    if count is None or count >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), count))


def sample_files(files: Sequence[ImageFile], count: int | None, seed: int = 0) -> list[ImageFile]:
    """A deterministic sample of `count` files (all, in order, when count is None or large enough)."""
    return [files[i] for i in sample_positions(len(files), count, seed)]


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


@dataclass(frozen=True, eq=False)
class DecodedShard:
    """A shard's images decoded here, with what could not be read."""

    images: np.ndarray                 # [n, 3, H, W] float32, the readable images in the shard's order
    labels: np.ndarray                 # [n] int64, -1 where unlabelled
    unreadable: tuple[str, ...] = ()   # the images that could not be decoded, by name


def decoded(samples: Sequence, names: Sequence[str]) -> DecodedShard:
    """Samples as a Dataset yields them ((image, label), or None for an unreadable one) -> DecodedShard."""
    good = [s for s in samples if s is not None]
    unreadable = tuple(name for s, name in zip(samples, names) if s is None)
    if not good:
        return DecodedShard(np.zeros((0, 0, 0, 0), np.float32), np.zeros(0, np.int64), unreadable)
    return DecodedShard(torch.stack([g[0] for g in good]).numpy(), np.array([g[1] for g in good], np.int64), unreadable)


@dataclass(frozen=True)
class FileShard:
    """Images named by path (a folder's files, a listing's lines), not their pixels: what travels to the
    process that decodes them. The files must be readable where the shard runs (shared storage)."""

    files: tuple[ImageFile, ...]

    def __len__(self) -> int:
        return len(self.files)

    def part(self, start: int, stop: int) -> "FileShard":
        return FileShard(self.files[start:stop])

    def read(self, pre: Preprocess) -> DecodedShard:
        dataset = ImageDataset(self.files, pre)
        return decoded([dataset[i] for i in range(len(dataset))], [str(f.path) for f in self.files])


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
        picked = torch.tensor(sample_positions(len(self.images), count, seed))
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
