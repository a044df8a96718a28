"""Small frozen dataclasses shared by models, targets, runners and reports."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np


class Precision(str, enum.Enum):
    """What a converter is asked to produce. Not every target supports every precision."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"                  # TFLite: the fastest static int8 recipe on XNNPACK; CoreML: int8 linear weights
    int8_static = "int8-static"    # TFLite: plain static PT2E int8 as the converter makes it (for NPUs / integer-only)
    int8_dynamic = "int8-dynamic"  # TFLite dynamic-range int8 (checked like any other)
    palettize6 = "palettize6"      # CoreML k-means 6-bit weights
    palettize4 = "palettize4"      # CoreML k-means 4-bit weights
    int4 = "int4"                  # CoreML per-block int4 weights (iOS 18)
    w8a8 = "w8a8"                  # CoreML weights and activations int8 (experimental)


class Layout(str, enum.Enum):
    nchw = "nchw"
    nhwc = "nhwc"


def parse_choice(enum_cls: type[enum.Enum], value: str, kind: str):
    """A user's string as one of an Enum's values; an unknown one is an UnknownNameError with 'did you mean'."""
    from .errors import UnknownNameError
    try:
        return enum_cls(value)
    except ValueError:
        raise UnknownNameError(kind, str(value), [e.value for e in enum_cls]) from None


def parse_precisions(text: str | Iterable[str]) -> list[Precision]:
    """"fp32,int8" (or a list of names) as Precisions, in order, each once; none at all is an error."""
    from .errors import InvalidValueError

    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = [parse_choice(Precision, item, "precision") for item in (str(p).strip() for p in items) if item]
    if not chosen:
        raise InvalidValueError(f"no precision given in {text!r} (known: {', '.join(p.value for p in Precision)})")
    return list(dict.fromkeys(chosen))


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the model's input tensor; checkpoints fix these numbers."""

    resize: int                                  # shorter side is resized to this many pixels
    crop: int                                    # then center-cropped to crop x crop
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted after scaling to [0, 1]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)   # divided after subtracting the mean
    color_order: str = "RGB"
    interpolation: str = "bicubic"

    def with_size(self, size: int) -> "Preprocess":
        """The same preprocessing for another input size, keeping the crop ratio."""
        ratio = self.resize / self.crop
        return Preprocess(round(size * ratio), size, self.mean, self.std, self.color_order, self.interpolation)

    def _mean_std(self, like: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mean/std shaped to broadcast over [N, 3, H, W] (or [3, H, W])."""
        shape = (3, 1, 1) if like.ndim == 3 else (1, 3, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(self.std, dtype=np.float32).reshape(shape)
        return mean, std

    def normalize(self, pixels01: np.ndarray) -> np.ndarray:
        """RGB scaled to [0, 1] -> the model's input: (x - mean) / std. Channels first."""
        pixels01 = np.asarray(pixels01, dtype=np.float32)
        mean, std = self._mean_std(pixels01)
        return (pixels01 - mean) / std

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """The model's input back to RGB pixel values 0..255 (float, unrounded): (x * std + mean) * 255."""
        x = np.asarray(x, dtype=np.float32)
        mean, std = self._mean_std(x)
        return (x * std + mean) * np.float32(255.0)

    def to_uint8(self, x: np.ndarray) -> np.ndarray:
        """The model's input [3, H, W] (or [1, 3, H, W]) as an HWC uint8 RGB image, as an app would hand it over."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 4:
            x = x[0]
        return np.clip(np.rint(self.to_pixels(x)), 0, 255).astype(np.uint8).transpose(1, 2, 0)

    def to_dict(self) -> dict:
        return {
            "resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
            "scale": 1 / 255, "color_order": self.color_order, "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, values: dict, size: int | None = None) -> "Preprocess":
        """The inverse of to_dict (a bundle's manifest, a package's metadata). A dict with only mean and
        std (a user's option) takes resize and crop from `size`, the input size; "scale" is implied."""
        named = {key: values[key] for key in ("color_order", "interpolation") if key in values}
        return cls(int(values.get("resize", size)), int(values.get("crop", size)),
                   tuple(float(v) for v in values["mean"]), tuple(float(v) for v in values["std"]), **named)


def guess_layout(shape: tuple[int, ...]) -> Layout | None:
    """An image input's layout from its shape: NHWC when the last axis is 3 and the second is not."""
    if len(shape) != 4:
        return None
    return Layout.nhwc if shape[-1] == 3 and shape[1] != 3 else Layout.nchw


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: Layout | None = None
    scale: float | None = None       # integer I/O only: real = (q - zero_point) * scale
    zero_point: int | None = None

    @property
    def canonical_shape(self) -> tuple[int, int, int, int]:
        """An image tensor's shape as [N, 3, H, W], whatever layout the file uses."""
        if len(self.shape) != 4:
            raise ValueError(f"{self.name}: not an image tensor {self.shape}")
        n, a, b, c = self.shape
        return (n, c, a, b) if self.layout is Layout.nhwc else (n, a, b, c)

    @property
    def image_size(self) -> int:
        """The square side of an image input (H of the canonical shape)."""
        return self.canonical_shape[2]


@dataclass(frozen=True)
class Calibration:
    """Preprocessed images for static quantization, and where they came from (for reports)."""

    batches: Iterable[Any]        # [B, 3, H, W] float32 tensors, the model's own preprocessing
    source: str                   # a folder path, a dataset split, or "synthetic"
    samples: int
    skipped: int = 0              # unreadable files in the folder
    files: tuple[Path, ...] = ()  # the image files used (a folder source), so parity can avoid them
    asked: dict | None = None     # calibration_for's arguments (calib_data, samples, seed): how to draw it again

    def record(self) -> dict | None:
        """What a parity report keeps so that `check` can calibrate the same way again (None: cannot)."""
        return dict(self.asked) if self.asked is not None else None

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


@dataclass(frozen=True)
class ExportSpec:
    """What the user asked a converter for; converters never silently change it."""

    model_name: str
    image_size: int
    precision: Precision = Precision.fp32
    layout: Layout = Layout.nchw
    int8_io: bool = False
    converter: str | None = None            # None: the target's default converter
    options: Any = None                     # the target's own frozen Options dataclass; None: its defaults
    preprocess: Preprocess | None = None    # the model's preprocessing (targets that embed it or record it)
    weights: str = ""                       # where the weights came from, for metadata the file carries
    keep_float: tuple[str, ...] = ()        # modules (qualified names) a quantizing conversion leaves in float

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        s = self.image_size
        return (1, 3, s, s) if self.layout is Layout.nchw else (1, s, s, 3)

    def validated_by(self, target: str) -> bool:
        """True when target `target`'s `validate` made this spec (see ValidSpec)."""
        return False


@dataclass(frozen=True)
class ValidSpec(ExportSpec):
    """An ExportSpec as a target's `validate` accepted it, its Options filled in. Only
    `BaseTarget.validate` makes one; the convert sequence and `target.convert` take it as it is, so a
    file's spec is validated once and never skipped. Outside a target's `validate`, build a new
    ExportSpec rather than `replace()` one of these."""

    validator: str = ""                     # the name of the target whose validate made it

    def validated_by(self, target: str) -> bool:
        return self.validator == target


@dataclass(frozen=True)
class Artifact:
    """A file (or .mlpackage directory) a converter wrote, with what a runner needs to run it."""

    path: Path
    target: str
    precision: Precision
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    converter: str = ""
    notes: tuple[str, ...] = ()    # facts the reports must carry (e.g. "int8 calibrated on synthetic data")
    keep_float: tuple[str, ...] = ()   # modules the conversion left in float (--keep-float), as its recipe records
    replica: Any = field(default=None, compare=False, repr=False)   # the conversion's own replica.Replica, if any

    @property
    def size_bytes(self) -> int:
        p = Path(self.path)
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
