"""Checkpoints: safetensors or a plain state dict (weights_only), an explicit rename table, one strict check."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import WeightMismatchError, WeightsError, first_line

# Keys some public checkpoints use that differ from ours: (old prefix, new prefix). Applied in order.
RENAMES: tuple[tuple[str, str], ...] = (
    ("module.", ""),          # saved from DataParallel / DDP
)
# Checkpoints that wrap the state dict in a dict under one of these keys.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors file or a torch state dict loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many kinds of errors; all mean one thing
        raise WeightsError(f"cannot read weights {path}: {type(e).__name__}: {first_line(e)}"
                           " (expected .safetensors or a PyTorch state dict)") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return state


def rename_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def load_weights(model: nn.Module, path: Path, model_name: str) -> None:
    """Load `path` into `model` strictly: any missing key, unexpected key or shape mismatch is an error."""
    state = rename_keys(read_state_dict(path))
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                    for k in own if k in state and state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        raise WeightMismatchError(model_name, missing, unexpected, shapes)
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))
