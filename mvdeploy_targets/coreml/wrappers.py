"""What gets converted: the model with the pieces the options ask for around it."""
from __future__ import annotations

from torch import Tensor, nn

from .options import CoreMLOptions


class Normalize(nn.Module):
    """Pixels scaled to [0, 1] by the image input -> (x - mean) / std, per channel, exactly."""

    def __init__(self, mean, std):
        super().__init__()
        import torch

        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:                 # [B, 3, H, W]
        return (x - self.mean) / self.std


class WithProbabilities(nn.Module):
    """logits -> (logits, softmax(logits)): the classifier reads probabilities, parity reads logits."""

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor]:   # [B, K]
        return logits, logits.softmax(dim=-1)


def deployable(model: nn.Module, options: CoreMLOptions) -> nn.Module:
    """The model with the pieces the options ask for around it, in eval mode."""
    parts = [Normalize(options.preprocess["mean"], options.preprocess["std"])] if options.image_input else []
    parts.append(model)
    parts += [WithProbabilities()] if options.labels else []
    return nn.Sequential(*parts).eval()
