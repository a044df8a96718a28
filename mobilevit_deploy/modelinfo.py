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
