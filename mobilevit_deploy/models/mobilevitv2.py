"""MobileViTv2 (Mehta & Rastegari 2022, "Separable Self-attention for Mobile Vision Transformers",
arXiv:2206.02680), parameter names as timm's `mobilevitv2_*`.

What changes from MobileViT (v1): the transformer works on [B, D, P, N] maps with 1x1 convs instead of
linears; attention is *separable*: one score per token (softmax over the N patches), a context vector
that is the score-weighted sum of the keys, broadcast onto ReLU(values): linear in N, no N x N matrix,
no heads. Norms are GroupNorm(1, D) (a LayerNorm over D, P and N). The block has no fusion conv and no
shortcut, and the widths follow one multiplier alpha (mobilevitv2_050 is alpha = 0.5).

Reads leaves to root: patch unfold/fold (plain and export-safe) -> layers (separable attention, conv
MLP, transformer layer) -> MobileViTv2 block -> model -> configs (VARIANTS). The MV2 blocks, the
stem and the head are MobileViT's (timm builds both with the same ByobNet blocks).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..spec import Preprocess
from .layers import ClassifierHead, ConvNormAct, TokenConv
from .mobilevit import MobileViTBackbone, PatchGridSizes, StageConfig, make_divisible


# ---------------------------------------------------------------------------------------------------
# Patches: a [B, D, H, W] map <-> [B, D, P, N] (P = pixels per patch, N = patches), channels first.
# Position (i, n) holds pixel i of patch n; attention mixes along N only, so pixel i of a patch
# attends to pixel i of the others (as in v1), and the 1x1 convs work on D without a transpose.
# ---------------------------------------------------------------------------------------------------

def unfold_patches_reference(x: Tensor, patch_size: int) -> Tensor:
    """[B, D, H, W] -> [B, D, P, N], written the obvious way (a rank-6 view, as timm does)."""
    batch, dim, height, width = x.shape
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(batch, dim, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4)  # [B, D, ph, pw, nh, nw]
    return x.reshape(batch, dim, p * p, nh * nw)


def fold_patches_reference(x: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """[B, D, P, N] -> [B, D, H, W], the inverse of `unfold_patches_reference` (a rank-6 view)."""
    batch, dim = x.shape[:2]
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(batch, dim, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3)  # [B, D, nh, ph, nw, pw]
    return x.reshape(batch, dim, height, width)


def unfold_patches(x: Tensor, patch_size: int) -> Tensor:
    """[B, D, H, W] -> [B, D, P, N], equal to `unfold_patches_reference` but never above rank 4.

    Why: Core ML tensors stop at rank 5 and TFLite delegates (GPU, NPUs) refuse rank-6 transposes;
    folding batch, channels and one grid axis together needs only two rank-4 transposes.
    """
    batch, dim, height, width = x.shape
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(batch * dim * nh, p, nw, p).permute(0, 1, 3, 2)      # [B*D*nh, ph, pw, nw]
    x = x.reshape(batch * dim, nh, p * p, nw).permute(0, 2, 1, 3)      # [B*D, P, nh, nw]
    return x.reshape(batch, dim, p * p, nh * nw)                       # [B, D, P, N]


def fold_patches(x: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """[B, D, P, N] -> [B, D, H, W], equal to `fold_patches_reference` but never above rank 4.

    Why: the same rank limits as `unfold_patches`.
    """
    batch, dim = x.shape[:2]
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(batch * dim, p * p, nh, nw).permute(0, 2, 1, 3)      # [B*D, nh, P, nw]
    x = x.reshape(batch * dim * nh, p, p, nw).permute(0, 1, 3, 2)      # [B*D*nh, ph, nw, pw]
    return x.reshape(batch, dim, height, width)                        # [B, D, H, W]


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------

class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group: normalizes each sample over (D, P, N), per-channel scale and shift.
    timm's `GroupNorm1`; names `weight`, `bias`."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)


class SeparableSelfAttention(nn.Module):
    """Separable self-attention (the paper's Fig. 4b); timm's `LinearSelfAttention` names.

    One 1x1 conv gives a score map (1 channel), keys and values (D each). Scores are softmaxed over the
    N patches; the context vector (D per pixel position) is the score-weighted sum of the keys; every
    token gets ReLU(value) * context, then a 1x1 output projection. Cost is linear in N.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qkv_proj = TokenConv(dim, 1 + 2 * dim)
        self.out_proj = TokenConv(dim, dim)

    def forward(self, x: Tensor) -> Tensor:                             # [B, D, P, N]
        query, key, value = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        scores = query.softmax(dim=-1)                                  # [B, 1, P, N]
        context = (key * scores).sum(dim=-1, keepdim=True)              # [B, D, P, 1]
        return self.out_proj(F.relu(value) * context)                   # [B, D, P, N]


class ConvMlp(nn.Module):
    """The transformer MLP as 1x1 convs on [B, D, P, N]: fc1 -> SiLU -> fc2 (timm's `ConvMlp` names)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = TokenConv(dim, hidden_dim)
        self.act = nn.SiLU()
        self.fc2 = TokenConv(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LinearTransformerBlock(nn.Module):
    """Pre-norm layer: x + attn(norm1(x)), then x + mlp(norm2(x)), on [B, D, P, N] (timm's names)."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.attn = SeparableSelfAttention(dim)
        self.norm2 = GroupNorm1(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:                             # [B, D, P, N]
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTV2Block(nn.Module):
    """Depthwise 3x3 conv and 1x1 to width D, separable attention across patches, 1x1 back to C.

    Unlike v1 there is no concat with the input and no fusion conv. A map that 2x2 patches do not tile
    (3x3 at 96x96 input) is resized bilinearly (align_corners=True) to whole patches first and the block
    returns that size, as timm's `MobileVitV2Block` does.
    """

    def __init__(self, chs: int, transformer_dim: int, transformer_depth: int, mlp_ratio: float,
                 patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(chs, chs, 3, groups=chs)
        self.conv_1x1 = nn.Conv2d(chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[
            LinearTransformerBlock(transformer_dim, mlp_ratio) for _ in range(transformer_depth)
        ])
        self.norm = GroupNorm1(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, chs, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:                             # [B, C, H, W]
        height, width = int(x.shape[-2]), int(x.shape[-1])
        p = self.patch_size
        grid_h, grid_w = -(-height // p) * p, -(-width // p) * p        # whole patches (timm's rule)
        if (grid_h, grid_w) != (height, width):
            x = F.interpolate(x, size=(grid_h, grid_w), mode="bilinear", align_corners=True)
        # local representation
        x = self.conv_1x1(self.conv_kxk(x))                             # [B, D, Hg, Wg]
        # global representation: pixel i of each patch attends to pixel i of the others
        patches = unfold_patches(x, p)                                  # [B, D, P, N]
        patches = self.norm(self.transformer(patches))
        x = fold_patches(patches, p, grid_h, grid_w)                    # [B, D, Hg, Wg]
        return self.conv_proj(x)                                        # [B, C, Hg, Wg]


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------

class MobileViTV2(MobileViTBackbone):
    """stem -> stages (MV2 blocks, then a MobileViTv2 block in the last three) -> pool -> fc.

    No final 1x1 conv: the head reads the last stage's channels (timm: `final_conv` is an Identity).
    """

    def __init__(self, cfg: MobileViTV2Config, num_classes: int = 1000, image_size: int | None = None):
        super().__init__(cfg, image_size, lambda c, stage: MobileViTV2Block(
            c, stage.transformer_dim, stage.transformer_depth, cfg.mlp_ratio, cfg.patch_size))
        self.head = ClassifierHead(self.stage_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:                             # [B, 3, S, S]
        x = self.features(x)                                            # [B, C4, S/32, S/32]
        x = x.mean(dim=(2, 3))                                          # [B, C4]
        return self.head(x)                                             # [B, num_classes]


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------

MOBILEVITV2_PREPROCESS = Preprocess(  # timm's mobilevitv2_* data config
    resize=288,                       # floor(256 / crop_pct 0.888)
    crop=256,
    mean=(0.0, 0.0, 0.0),             # RGB scaled to [0, 1], nothing else (as v1)
    std=(1.0, 1.0, 1.0),
    interpolation="bicubic",
)


@dataclass(frozen=True)
class MobileViTV2Config(PatchGridSizes):
    name: str                           # registry name, also used in error messages
    width_multiplier: float             # alpha of the paper: every width below is alpha x the 1.0 model's
    stem_channels: int                  # output channels of the stride-2 3x3 stem conv
    stages: tuple[StageConfig, ...]     # five stages; the stem and stages 1-4 halve the resolution
    patch_size: int = 2                 # side of the pixel patches in every MobileViTv2 block
    mlp_ratio: float = 2.0              # transformer MLP hidden width / transformer width
    default_image_size: int = 256       # the side the published weights were trained at
    preprocess: Preprocess = MOBILEVITV2_PREPROCESS
    family: str = "mobilevitv2"         # which model class builds this config


def scaled_config(name: str, width_multiplier: float) -> MobileViTV2Config:
    """The paper's Table 1 (and timm's `_mobilevitv2_cfg`) at width alpha: channels int(alpha x (64,
    128, 256, 384, 512)), stem int(alpha x 32); MV2 expansion 2; attention width half the stage's
    channels; 2, 4 and 3 transformer layers in the last three stages."""
    chs = [int(c * width_multiplier) for c in (64, 128, 256, 384, 512)]
    depths = (0, 0, 2, 4, 3)
    stages = tuple(
        StageConfig(c, num_mv2_blocks=2 if index == 1 else 1, stride=1 if index == 0 else 2, expand_ratio=2.0,
                    transformer_dim=make_divisible(0.5 * c) if depth else 0, transformer_depth=depth)
        for index, (c, depth) in enumerate(zip(chs, depths))
    )
    return MobileViTV2Config(name, width_multiplier, stem_channels=int(32 * width_multiplier), stages=stages)


VARIANTS: dict[str, MobileViTV2Config] = {
    "mobilevitv2_050": scaled_config("mobilevitv2_050", 0.50),   # 1.37 M parameters in the paper
    "mobilevitv2_075": scaled_config("mobilevitv2_075", 0.75),   # 2.87 M
    "mobilevitv2_100": scaled_config("mobilevitv2_100", 1.00),   # 4.90 M
}
