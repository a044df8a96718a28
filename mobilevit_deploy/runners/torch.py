"""The reference: the PyTorch model itself, in eval mode, float32. Its "artifact" is the module."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Runner


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, artifact: nn.Module, *, input_shape: tuple[int, int, int, int]):
        super().__init__(artifact.eval(), input_shape=input_shape)

    @property
    def model(self) -> nn.Module:
        return self.artifact

    @property
    def engine(self) -> str:
        return f"torch {torch.__version__} eager CPU"

    @torch.no_grad()
    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()
