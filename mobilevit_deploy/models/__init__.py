"""Model registry and factory: `MODELS` (name -> config), `model_config(name)`, `create_model(name)`."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputSizeError, InvalidValueError, UnknownModelError
from .layers import init_weights
from .mobilevit import VARIANTS as MOBILEVIT_VARIANTS, MobileViT, MobileViTConfig
from .mobilevitv2 import VARIANTS as MOBILEVITV2_VARIANTS, MobileViTV2, MobileViTV2Config
from .swin import VARIANTS as SWIN_VARIANTS, SwinConfig, SwinTransformer

ModelConfig = MobileViTConfig | MobileViTV2Config | SwinConfig
"""Every config has: name, family, default_image_size, preprocess (Preprocess), size_multiple and
validate_image_size(size), which raises InputSizeError for a side the model cannot take."""

MODELS: dict[str, ModelConfig] = {**MOBILEVIT_VARIANTS, **MOBILEVITV2_VARIANTS, **SWIN_VARIANTS}

FAMILIES: dict[str, type[nn.Module]] = {   # config.family -> the class that builds it
    "mobilevit": MobileViT,
    "mobilevitv2": MobileViTV2,
    "swin": SwinTransformer,
}


def model_config(name: str) -> ModelConfig:
    """The config registered under `name`; UnknownModelError (listing the known names) otherwise."""
    if name not in MODELS:
        raise UnknownModelError(name, MODELS)
    return MODELS[name]


MAX_IMAGE_SIZE = 2048          # beyond this a single image's activations take gigabytes
MAX_CLASSES = 100_000


def create_model(name: str, num_classes: int = 1000, image_size: int | None = None, seed: int = 0,
                 trained_size: int | None = None) -> nn.Module:
    """A randomly initialized model in eval mode; the same arguments always give the same weights.

    `image_size` (default: the config's) is validated up front (InputSizeError). The model carries
    `.cfg`, `.name` and `.image_size`. The init draws only from a generator seeded with `seed`, so
    the global torch RNG is left as it was. `trained_size`: the side the weights about to be loaded
    were trained at; a Swin built at another side gets windows that follow the side
    (`cfg.window_for`), and `load_weights` resizes the checkpoint's bias tables to them.
    MobileViT takes any side with the same weights and ignores it.
    """
    cfg = model_config(name)
    size = cfg.default_image_size if image_size is None else image_size
    cfg.validate_image_size(size)
    if size > MAX_IMAGE_SIZE:
        raise InputSizeError(f"{name}: image size {size} is larger than mvdeploy supports ({MAX_IMAGE_SIZE}); "
                             "phones run these models at 64-512")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise InvalidValueError(f"--num-classes must be between 1 and {MAX_CLASSES:,}; got {num_classes}")
    extra = {}
    if isinstance(cfg, SwinConfig) and trained_size is not None and trained_size != size:
        extra["window_size"] = cfg.window_for(size)
    with torch.random.fork_rng(devices=[]):   # layer constructors draw from the global RNG; undo that
        model = FAMILIES[cfg.family](cfg, num_classes=num_classes, image_size=size, **extra)
    init_weights(model, torch.Generator().manual_seed(seed))
    return model.eval()


def trained_size(name: str, state: dict, image_size: int) -> int:
    """The side a weights file of model `name` was trained at: the config's, as every public checkpoint,
    unless the file's Swin bias tables are those of the model trained at `image_size` and not those of
    the config's side (a Swin trained at 64 clamps its windows to the small late-stage maps: tables of
    windows 7, 7, 4, 2 where one trained at 224 has 7 everywhere): then it was trained at `image_size`
    and loads as it is. MobileViT weights fit every side: the config's."""
    cfg = model_config(name)
    if not isinstance(cfg, SwinConfig) or image_size == cfg.default_image_size:
        return cfg.default_image_size
    found = _table_shapes(state)
    at_side = _table_shapes(create_model(name, num_classes=1, image_size=image_size).state_dict())
    at_default = _table_shapes(create_model(name, num_classes=1).state_dict())       # trained at the config's side
    return image_size if found == at_side != at_default else cfg.default_image_size


def _table_shapes(state: dict) -> list[tuple[int, ...]]:
    """The shapes of every relative position bias table, in any checkpoint's naming (ours, timm's, HF's)."""
    return sorted(tuple(v.shape) for k, v in state.items() if k.endswith("relative_position_bias_table"))


__all__ = ["MODELS", "FAMILIES", "ModelConfig", "create_model", "model_config", "trained_size"]
