"""A Hugging Face `preprocessor_config.json` as our `Preprocess`: resize, crop, mean/std, resampling.

What transformers' image processors of these models read (MobileViTImageProcessor, ViTImageProcessor, which
the Swin checkpoints name, and the older *FeatureExtractor files with plain-number sizes): `size` (a shorter
side, or a height and width, or a number), `crop_size` with `do_center_crop`, `resample` (a PIL filter
number), `do_rescale`/`rescale_factor`, `do_normalize`/`image_mean`/`image_std`, and MobileViT's
`do_flip_channel_order` (the BGR stem, which `weights.py` folds so every model of ours takes RGB).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError, first_line
from ..spec import Preprocess

PROCESSOR_CONFIG = "preprocessor_config.json"   # what save_pretrained writes beside the weights
# PIL's filter numbers (Image.Resampling), as processors store `resample`; those our preprocessing has
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
PIL_FILTERS = {1: "lanczos", 4: "box", 5: "hamming"}
# Processors whose `do_normalize` is off unless the file turns it on (MobileViT's feed RGB in [0, 1])
UNNORMALIZED_BY_DEFAULT = ("MobileViT",)


@dataclass(frozen=True)
class Processor:
    """What a preprocessor_config.json says, in mvdeploy's terms."""

    preprocess: Preprocess             # RGB; the crop is the model's input side (the BGR flip: weights.flips_channels)
    description: str                   # one line for the notes


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or one WeightsError line naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read {path}: {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(value, dict):
        raise WeightsError(f"{path} holds no JSON object")
    return value


def read_processor(path: Path) -> Processor:
    """The preprocessing a preprocessor_config.json describes; one WeightsError line for what our
    preprocessing cannot do (a non-square input, a filter we do not resize with)."""
    path = Path(path)
    config = read_json(path)
    kind = str(config.get("image_processor_type") or config.get("feature_extractor_type") or "")
    size = _side(config.get("size"), path, "size")
    crop = _side(config.get("crop_size"), path, "crop_size") if config.get("do_center_crop", False) else None
    resize, (height, width) = size[0], crop or size
    if height != width:
        raise WeightsError(f"{path} asks for {height}x{width} inputs; mvdeploy's models take square ones")
    if not config.get("do_resize", True):
        resize = height
    interpolation = _interpolation(config.get("resample", 3), path)
    scale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
    normalizes = config.get("do_normalize")
    if normalizes is None:
        normalizes = not kind.startswith(UNNORMALIZED_BY_DEFAULT)
    mean = _triple(config.get("image_mean", (0.0,) * 3), path, "image_mean") if normalizes else (0.0,) * 3
    std = _triple(config.get("image_std", (1.0,) * 3), path, "image_std") if normalizes else (1.0,) * 3
    # (pixels * scale - mean) / std == (pixels / 255 - mean') / std' with mean' = mean / (255 scale), std' alike
    factor = 255.0 * scale
    if abs(factor - 1.0) > 1e-6:
        mean, std = tuple(m / factor for m in mean), tuple(s / factor for s in std)
    preprocess = Preprocess(resize, height, mean, std, "RGB", interpolation)
    squash = "" if crop else (" (the processor resizes to a square; mvdeploy resizes the shorter side and crops: "
                              "the same on square images)")
    described = (f"input {height}x{height} and preprocessing from {path.name}: {interpolation} resize of the "
                 f"shorter side to {resize}, center crop {height}, mean {_numbers(mean)}, std {_numbers(std)}"
                 f"{squash}")
    return Processor(preprocess, described)


def _side(value, path: Path, field: str) -> tuple[int, int]:
    """(height, width) of a processor's size: {"shortest_edge": n}, {"height": h, "width": w}, or n."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        return int(value), int(value)
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
    raise WeightsError(f"{path}: {field} {value!r} is not a size mvdeploy reads "
                       "(a number, shortest_edge, or height and width)")


def _interpolation(value, path: Path) -> str:
    code = getattr(value, "value", value)
    if code in RESAMPLE:
        return RESAMPLE[code]
    name = PIL_FILTERS.get(code, repr(code))
    raise WeightsError(f"{path}: resample {name}; mvdeploy resizes with {', '.join(RESAMPLE.values())}")


def _triple(value, path: Path, field: str) -> tuple[float, float, float]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3:
        raise WeightsError(f"{path}: {field} has {len(values)} values; RGB needs 3")
    return tuple(float(v) for v in values)


def _numbers(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
