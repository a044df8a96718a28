"""Small frozen dataclasses shared by models, converters, runners and reports."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Precision(str, enum.Enum):
    """What a converter is asked to produce. Not every target supports every precision."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"                  # TFLite: full-integer static; CoreML: int8 linear weights
    int8_dynamic = "int8-dynamic"  # TFLite dynamic-range int8 (checked like any other)
    palettize6 = "palettize6"      # CoreML k-means 6-bit weights
    palettize4 = "palettize4"      # CoreML k-means 4-bit weights
    int4 = "int4"                  # CoreML per-block int4 weights (iOS 18)
    w8a8 = "w8a8"                  # CoreML weights and activations int8 (experimental)


class Layout(str, enum.Enum):
    nchw = "nchw"
    nhwc = "nhwc"


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

    def to_dict(self) -> dict:
        return {
            "resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
            "scale": 1 / 255, "color_order": self.color_order, "interpolation": self.interpolation,
        }


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: Layout | None = None
    scale: float | None = None       # integer I/O only: real = (q - zero_point) * scale
    zero_point: int | None = None


@dataclass(frozen=True)
class ExportSpec:
    """What the user asked a converter for; converters never silently change it."""

    model_name: str
    image_size: int
    precision: Precision = Precision.fp32
    layout: Layout = Layout.nchw
    int8_io: bool = False
    converter: str | None = None            # None: the target's default converter
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        s = self.image_size
        return (1, 3, s, s) if self.layout is Layout.nchw else (1, s, s, 3)


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

    @property
    def size_bytes(self) -> int:
        p = Path(self.path)
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
