"""Conv+BN(+SiLU) fusion through one protocol: a fusable module has `fuse() -> nn.Module`."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from .errors import FusionError


@dataclass(frozen=True)
class FusionResult:
    model: nn.Module
    fused_pairs: int        # how many Conv+BN pairs became one conv


def _fuse_children(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if hasattr(child, "fuse"):
            setattr(module, name, child.fuse())
            count += 1
        else:
            count += _fuse_children(child)
    return count


def fuse(model: nn.Module) -> FusionResult:
    """A new model in which every fusable block (Conv+BN, activation kept) is one conv.

    The input model is left untouched. Refuses a model in training mode.
    """
    if model.training:
        raise FusionError("cannot fuse a model in training mode; call model.eval() first")
    fused = copy.deepcopy(model)
    count = _fuse_children(fused)
    return FusionResult(fused.eval(), count)
