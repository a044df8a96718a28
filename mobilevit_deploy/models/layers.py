"""Leaf layers shared by MobileViT (v1, v2) and Swin. Names follow timm so public checkpoints load."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import FusionError


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv that computes bn(conv(x)) exactly (up to float rounding), conv bias included.

    Refuses a BatchNorm in training mode: its batch statistics cannot be folded into weights.
    """
    if bn.training:
        raise FusionError("cannot fuse a BatchNorm in training mode; call model.eval() first")
    if bn.running_mean is None or bn.running_var is None:
        raise FusionError("cannot fuse a BatchNorm without running statistics (track_running_stats=False)")
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
        scale = gamma * inv_std                                          # [C_out]
        conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        fused.bias.copy_(((conv_bias - bn.running_mean.double()) * scale + beta).to(conv.weight.dtype))
    return fused


class ConvNormAct(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + optional activation: timm's `ConvNormAct` names (conv, bn).

    `fuse()` returns a FusedConvAct: the BN folded into the conv, the activation kept.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> "FusedConvAct":
        return FusedConvAct(fuse_conv_bn(self.conv, self.bn), self.act)


class FusedConvAct(nn.Module):
    """What ConvNormAct becomes after fusion: one biased conv and the same activation."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class Mlp(nn.Module):
    """Transformer MLP: fc1 -> activation -> fc2 (timm's `Mlp` names)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over tokens (timm's `Attention` names: qkv, proj).

    Written out (scale, matmul, softmax, matmul) rather than `scaled_dot_product_attention`, so every
    converter sees plain ops; tensors stay at rank <= 5.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:                             # [B, N, D]
        _, num_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(-1, num_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                  # 3 x [B, h, N, hd]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, N, N]
        x = (attn @ v).transpose(1, 2).reshape(-1, num_tokens, dim)     # [B, N, D]
        return self.proj(x)


class ClassifierHead(nn.Module):
    """The classifier on pooled features; its one layer is called `fc` as in timm (`head.fc`)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:                             # [B, C]
        return self.fc(x)                                               # [B, num_classes]


class TokenConv(nn.Conv2d):
    """A 1x1 conv that is a transformer's linear layer on channels-first tokens [B, D, P, N]
    (MobileViTv2). It computes and saves exactly as nn.Conv2d; `init_weights` initializes it like an
    nn.Linear (trunc normal, std 0.02), as v1's transformer linears and Hugging Face's MobileViTV2 are.
    A conv init (std sqrt(2 / fan_out)) would give every attention and MLP branch full strength at
    random init: a chaotic network on which int8 or fp32 reordering noise grows far beyond what a
    trained model shows (random mobilevitv2_050: int8 cosine 0.92, fp32 5e-6 from fp64)."""

    def __init__(self, in_chs: int, out_chs: int, bias: bool = True):
        super().__init__(in_chs, out_chs, 1, bias=bias)


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Random init drawn only from `generator`, so a seed gives the same weights on every call.

    Convs: normal with std sqrt(2 / fan_out) (timm's ByobNet); linears and TokenConvs: truncated normal, std 0.02;
    norms: weight 1, bias 0, BatchNorm running statistics reset. A module with parameters of its own
    (e.g. a relative position bias table) initializes them in `init_own_parameters(generator)`.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, TokenConv)):
            nn.init.trunc_normal_(module.weight, std=0.02, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
        if hasattr(module, "init_own_parameters"):
            module.init_own_parameters(generator)
