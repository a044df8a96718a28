"""Model facts for `mvdeploy models`: parameters and multiply-accumulates at a given input size."""
from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int) -> int:
    """MACs of one forward pass at image_size (convs, linears, matmuls, attention): FLOPs / 2."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() // 2


def describe_models() -> list[dict]:
    """Every built-in model (1000 classes): name, family, parameters, MACs and input side at its default size."""
    from .models import MODELS, create_model

    rows = []
    for name, config in MODELS.items():
        model = create_model(name)
        rows.append({"name": name, "family": config.family, "parameters": count_parameters(model),
                     "macs": count_macs(model, config.default_image_size),
                     "image_size": config.default_image_size})
    return rows
