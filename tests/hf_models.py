"""Hugging Face models with trained-like statistics, built from their config classes (no download).

transformers' own init (std 0.02 everywhere) gives a MobileViT logits of ~1e-43: no signal a parity check
could judge (see `parity.compare.degenerate`). These helpers set every tensor so that no layer is a no-op and
the logits depend on the image, as trained weights do.
"""
import torch


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float tensor random (BatchNorm scales and variances around 1), so no tensor is a no-op
    and a wrong rename or a missed channel flip changes the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.dtype.is_floating_point:
                continue
            if key.endswith(("running_var", "normalization.weight")):
                value.copy_(0.75 + 0.5 * torch.rand(value.shape, generator=generator))
            else:
                value.copy_(0.1 * torch.randn(value.shape, generator=generator))
    return model.eval()


def randomize_v2(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`randomize`, then MobileViTV2's convs at ~1/sqrt(fan_in) and its norm scales around 1: 0.1-scaled
    weights through its 20 depthwise/1x1 layers flatten the input away."""
    randomize(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.dim() == 4:
                value.copy_(torch.randn(value.shape, generator=generator) / value[0].numel() ** 0.5)
            elif "layernorm" in key and key.endswith("weight"):
                value.copy_(0.75 + 0.5 * torch.rand(value.shape, generator=generator))
    return model.eval()


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights at ~1/sqrt(fan_in), norm scales and variances around 1, small biases: the logits of a
    MobileViT at 64x64 move by 5-35% of their size from image to image, as a trained model's do (with
    `randomize`'s 0.1-scaled tensors the classifier's bias drowns the image: 1e-6 of the logits)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.dtype.is_floating_point:
                continue
            if value.dim() >= 2:
                value.copy_(torch.randn(value.shape, generator=generator) / value[0].numel() ** 0.5)
            elif key.endswith("running_var") or ("norm" in key and key.endswith("weight")):
                value.copy_(0.75 + 0.5 * torch.rand(value.shape, generator=generator))
            else:
                value.copy_(0.01 * torch.randn(value.shape, generator=generator))
    return model.eval()
