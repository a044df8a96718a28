"""Which built-in model a Hugging Face `config.json` describes, and the class names in its `id2label`.

transformers builds a model from config.json alone: `model_type` picks the class, the other fields its
sizes. This module computes the same architecture facts (widths, depths, heads, window, activation) from
both sides and compares them: `theirs(config.json)`, with transformers' defaults and formulas, against
`ours(built-in config, image size)`. One `HfArchitecture` per model_type, as data; a config that matches
no built-in model is refused naming the closest one and how it differs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import WeightsError
from . import MODELS, ModelConfig

PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+$")   # transformers' id2label when nobody named the classes
SILU = {"silu": "silu", "swish": "silu"}         # transformers' two names for x * sigmoid(x)


def _hf_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """transformers' `make_divisible` (modeling_mobilevit(v2).py), which sizes their layers."""
    rounded = max(min_value or divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _one(values) -> float | list[float]:
    """A per-stage setting as one number when every stage has it (transformers has one field)."""
    values = list(values)
    return values[0] if len(set(values)) == 1 else values


def _common(c: dict) -> dict:
    """Fields every family reads the same way."""
    return {"num_channels": c["num_channels"], "layer_norm_eps": float(c["layer_norm_eps"]),
            "hidden_act": SILU.get(c["hidden_act"], c["hidden_act"])}


# ---------------------------------------------------------------------------------------------------
# MobileViT (transformers' MobileViTForImageClassification)
# ---------------------------------------------------------------------------------------------------

def _mobilevit_theirs(c: dict) -> dict:
    return {**_common(c), "neck_hidden_sizes": list(c["neck_hidden_sizes"]), "hidden_sizes": list(c["hidden_sizes"]),
            "mv2_blocks": [1, 3, 1, 1, 1], "transformer_depths": [2, 4, 3],   # fixed in MobileViTEncoder
            "expand_ratio": float(c["expand_ratio"]), "num_attention_heads": c["num_attention_heads"],
            "mlp_ratio": float(c["mlp_ratio"]), "patch_size": c["patch_size"], "qkv_bias": c["qkv_bias"],
            "conv_kernel_size": c["conv_kernel_size"], "output_stride": c["output_stride"]}


def _mobilevit_ours(cfg: ModelConfig, image_size: int) -> dict:
    blocks = [s for s in cfg.stages if s.transformer_depth]
    return {"num_channels": 3, "layer_norm_eps": 1e-5, "hidden_act": "silu",      # our layers' constants
            "neck_hidden_sizes": [cfg.stem_channels, *(s.channels for s in cfg.stages), cfg.num_features],
            "hidden_sizes": [s.transformer_dim for s in blocks], "mv2_blocks": [s.num_mv2_blocks for s in cfg.stages],
            "transformer_depths": [s.transformer_depth for s in blocks],
            "expand_ratio": _one(s.expand_ratio for s in cfg.stages), "num_attention_heads": cfg.num_heads,
            "mlp_ratio": cfg.mlp_ratio, "patch_size": cfg.patch_size, "qkv_bias": True, "conv_kernel_size": 3,
            "output_stride": 32}


# ---------------------------------------------------------------------------------------------------
# MobileViTV2 (MobileViTV2ForImageClassification): widths from width_multiplier, as transformers sizes them
# ---------------------------------------------------------------------------------------------------

def _mobilevitv2_theirs(c: dict) -> dict:
    w = float(c["width_multiplier"])
    return {**_common(c),
            "stem_channels": _hf_divisible(min(max(32 * w, 16), 64), 8, min_value=16),
            "channels": [_hf_divisible(64 * w, 16), *(_hf_divisible(base * w) for base in (128, 256, 384, 512))],
            "mv2_blocks": [1, 2, 1, 1, 1],                                   # fixed in MobileViTV2Encoder
            "transformer_dims": [_hf_divisible(base * w) for base in c["base_attn_unit_dims"]],
            "transformer_depths": list(c["n_attn_blocks"]), "mlp_ratio": float(c["ffn_multiplier"]),
            "expand_ratio": float(c["expand_ratio"]), "patch_size": c["patch_size"],
            "conv_kernel_size": c["conv_kernel_size"], "output_stride": c["output_stride"]}


def _mobilevitv2_ours(cfg: ModelConfig, image_size: int) -> dict:
    blocks = [s for s in cfg.stages if s.transformer_depth]
    return {"num_channels": 3, "layer_norm_eps": 1e-5, "hidden_act": "silu",
            "stem_channels": cfg.stem_channels, "channels": [s.channels for s in cfg.stages],
            "mv2_blocks": [s.num_mv2_blocks for s in cfg.stages],
            "transformer_dims": [s.transformer_dim for s in blocks],
            "transformer_depths": [s.transformer_depth for s in blocks], "mlp_ratio": cfg.mlp_ratio,
            "expand_ratio": _one(s.expand_ratio for s in cfg.stages), "patch_size": cfg.patch_size,
            "conv_kernel_size": 3, "output_stride": 32}


# ---------------------------------------------------------------------------------------------------
# Swin (SwinForImageClassification): the window belongs to the image size it was trained at
# ---------------------------------------------------------------------------------------------------

def _swin_theirs(c: dict) -> dict:
    return {**_common(c), "embed_dim": c["embed_dim"], "depths": list(c["depths"]), "num_heads": list(c["num_heads"]),
            "window_size": c["window_size"], "patch_size": c["patch_size"], "mlp_ratio": float(c["mlp_ratio"]),
            "qkv_bias": c["qkv_bias"], "use_absolute_embeddings": c["use_absolute_embeddings"]}


def _swin_ours(cfg: ModelConfig, image_size: int) -> dict:
    return {"num_channels": 3, "layer_norm_eps": 1e-5, "hidden_act": "gelu",
            "embed_dim": cfg.embed_dim, "depths": list(cfg.depths), "num_heads": list(cfg.num_heads),
            "window_size": cfg.window_for(image_size),      # our windows follow the side (7 at 224, 2 at 64)
            "patch_size": cfg.patch_size, "mlp_ratio": cfg.mlp_ratio, "qkv_bias": True,
            "use_absolute_embeddings": False}


@dataclass(frozen=True)
class HfArchitecture:
    model_type: str                     # config.json's "model_type"
    family: str                         # our family (ModelConfig.family) that builds it
    classifier: str                     # the transformers class whose weights we load
    defaults: dict                      # transformers' defaults of the fields `theirs` reads (configuration_*.py)
    theirs: Callable[[dict], dict]      # config.json, defaults filled -> architecture facts
    ours: Callable[[ModelConfig, int], dict]   # a built-in config at an image size -> the same facts


_COMMON_DEFAULTS = {"num_channels": 3, "layer_norm_eps": 1e-5}
ARCHITECTURES: dict[str, HfArchitecture] = {a.model_type: a for a in (
    HfArchitecture("mobilevit", "mobilevit", "MobileViTForImageClassification", {
        **_COMMON_DEFAULTS, "image_size": 256, "patch_size": 2, "hidden_sizes": [144, 192, 240],
        "neck_hidden_sizes": [16, 32, 64, 96, 128, 160, 640], "num_attention_heads": 4, "mlp_ratio": 2.0,
        "expand_ratio": 4.0, "hidden_act": "silu", "conv_kernel_size": 3, "output_stride": 32, "qkv_bias": True,
    }, _mobilevit_theirs, _mobilevit_ours),
    HfArchitecture("mobilevitv2", "mobilevitv2", "MobileViTV2ForImageClassification", {
        **_COMMON_DEFAULTS, "image_size": 256, "patch_size": 2, "expand_ratio": 2.0, "hidden_act": "swish",
        "conv_kernel_size": 3, "output_stride": 32, "n_attn_blocks": [2, 4, 3], "base_attn_unit_dims": [128, 192, 256],
        "width_multiplier": 1.0, "ffn_multiplier": 2,
    }, _mobilevitv2_theirs, _mobilevitv2_ours),
    HfArchitecture("swin", "swin", "SwinForImageClassification", {
        **_COMMON_DEFAULTS, "image_size": 224, "patch_size": 4, "embed_dim": 96, "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0, "qkv_bias": True, "hidden_act": "gelu",
        "use_absolute_embeddings": False,
    }, _swin_theirs, _swin_ours),
)}


@dataclass(frozen=True)
class Described:
    """What a config.json says in our terms."""

    model: str                          # the built-in model it describes
    image_size: int                     # the side it was configured for (config.json's image_size)
    description: str                    # one line for the notes


def describe_config(config: dict, path: Path) -> Described:
    """The built-in model `config` (a config.json's contents) describes, or one WeightsError line naming
    what it is: another architecture, another task, or sizes no built-in model has (with the closest)."""
    model_type = config.get("model_type")
    named = config.get("architectures") or []
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        timm = config.get("architecture")            # timm's config.json: our names are timm's
        if isinstance(timm, str) and timm.split(".")[0] in MODELS:
            name = timm.split(".")[0]
            size = MODELS[name].default_image_size
            return Described(name, size, f"model {name} from {path} (timm's architecture {timm})")
        what = f"'{model_type}'" + (f" ({', '.join(map(str, named))})" if named else "") if model_type else (
            f"'{timm}'" if timm else "no model_type")
        raise WeightsError(f"{path} describes a model mvdeploy does not build: {what}; it reads Hugging Face "
                           f"{', '.join(ARCHITECTURES)} folders ({', '.join(a.classifier for a in ARCHITECTURES.values())})")
    if named and arch.classifier not in named:
        raise WeightsError(f"{path} describes {', '.join(map(str, named))}; mvdeploy converts {arch.classifier}")
    filled = {**arch.defaults, **{k: v for k, v in config.items() if v is not None}}
    size = int(filled["image_size"])
    theirs = arch.theirs(filled)
    candidates = {name: _differences(arch.ours(cfg, size), theirs)
                  for name, cfg in MODELS.items() if cfg.family == arch.family}
    exact = [name for name, different in candidates.items() if not different]
    if exact:
        shown = ", ".join(f"{k} {_shown(v)}" for k, v in theirs.items() if k in DESCRIBED)
        return Described(exact[0], size, f"model {exact[0]} from {path} ({model_type}: {shown}; image_size {size})")
    closest = min(candidates, key=lambda name: len(candidates[name]))
    differences = "; ".join(f"{k} {_shown(theirs[k])} (ours {_shown(v)})" for k, v in candidates[closest][:3])
    more = f" and {len(candidates[closest]) - 3} more" if len(candidates[closest]) > 3 else ""
    raise WeightsError(f"no built-in model matches {path} ({model_type}, image_size {size}): the closest, {closest}, "
                       f"differs in {differences}{more}; built-in {arch.family} models: {', '.join(candidates)}")


# The facts a note names (the others are checked as well, and shown only when they differ)
DESCRIBED = ("neck_hidden_sizes", "hidden_sizes", "channels", "transformer_dims", "embed_dim", "depths", "num_heads",
             "window_size")


def _differences(ours: dict, theirs: dict) -> list[tuple[str, object]]:
    """(field, our value) for every field where the two differ."""
    return [(key, value) for key, value in ours.items() if not _same(value, theirs.get(key))]


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(b, (int, float)) and isinstance(a, (int, float)) and abs(a - b) <= 1e-9 * max(1, abs(a))
    return a == b


def _shown(value) -> str:
    return "[" + ", ".join(map(_shown, value)) + "]" if isinstance(value, (list, tuple)) else f"{value:g}" if \
        isinstance(value, float) else str(value)


def labels_of(config: dict, path: Path) -> tuple[str, ...] | None:
    """The class names of `id2label`, in index order; None when it is absent or holds only transformers'
    placeholders (LABEL_0, LABEL_1, ...: nobody named the classes)."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        items = sorted((int(key), str(value)) for key, value in id2label.items())
    except (TypeError, ValueError):
        raise WeightsError(f"{path}: id2label keys must be class indices 0..K-1") from None
    if [index for index, _ in items] != list(range(len(items))):
        raise WeightsError(f"{path}: id2label names classes {items[0][0]}..{items[-1][0]} with gaps; "
                           f"expected 0..{len(items) - 1}")
    names = tuple(name for _, name in items)
    return None if all(PLACEHOLDER_LABEL.match(name) for name in names) else names
