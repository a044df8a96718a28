"""MobileViT (Mehta & Rastegari, ICLR 2022, arXiv:2110.02178), parameter names as timm's `mobilevit_*`.

Reads leaves to root: patch unfold/fold (plain and export-safe) -> blocks (MV2, transformer layer,
MobileViT block) -> model -> configs (VARIANTS). Checkpoints saved by timm load without renaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputSizeError
from ..spec import Preprocess
from .layers import Attention, ClassifierHead, ConvNormAct, Mlp


# ---------------------------------------------------------------------------------------------------
# Patches: a [B, D, H, W] map <-> [B*P, N, D] sequences. P = pixels per patch, N = patches.
# Sequence b*P + i holds pixel i of every patch of image b, so pixel i attends only to pixel i of
# the other patches, as in the paper. timm uses the same layout, so its weights compute the same.
# ---------------------------------------------------------------------------------------------------

def unfold_patches_reference(x: Tensor, patch_size: int) -> Tensor:
    """[B, D, H, W] -> [B*P, N, D], written the obvious way (a rank-6 view). Tests compare against it."""
    batch, dim, height, width = x.shape
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(batch, dim, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1)  # [B, ph, pw, nh, nw, D]
    return x.reshape(batch * p * p, nh * nw, dim)


def fold_patches_reference(x: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """[B*P, N, D] -> [B, D, H, W], the inverse of `unfold_patches_reference` (a rank-6 view)."""
    _, _, dim = x.shape
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(-1, p, p, nh, nw, dim).permute(0, 5, 3, 1, 4, 2)     # [B, D, nh, ph, nw, pw]
    return x.reshape(-1, dim, height, width)


def unfold_patches(x: Tensor, patch_size: int) -> Tensor:
    """[B, D, H, W] -> [B*P, N, D], equal to `unfold_patches_reference` but never above rank 5.

    Why: Core ML tensors stop at rank 5, and TFLite delegates (GPU, NPUs) refuse rank-6 transposes;
    folding batch and channels into one axis keeps every reshape/transpose at rank <= 5. Pure
    reshapes and permutes (no one-hot conv) also stay exact under int8 quantization.
    """
    batch, dim, height, width = x.shape
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(batch * dim, nh, p, nw, p).permute(0, 2, 4, 1, 3)     # [B*D, ph, pw, nh, nw]
    x = x.reshape(batch, dim, p * p, nh * nw).permute(0, 2, 3, 1)       # [B, P, N, D]
    return x.reshape(batch * p * p, nh * nw, dim)                       # [B*P, N, D]


def fold_patches(x: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """[B*P, N, D] -> [B, D, H, W], equal to `fold_patches_reference` but never above rank 5.

    Why: the same rank limits as `unfold_patches` (Core ML rank <= 5, TFLite delegates).
    """
    _, num_patches, dim = x.shape
    p, nh, nw = patch_size, height // patch_size, width // patch_size
    x = x.reshape(-1, p * p, num_patches, dim).permute(0, 3, 1, 2)      # [B, D, P, N]
    x = x.reshape(-1, p, p, nh, nw).permute(0, 3, 1, 4, 2)              # [B*D, nh, ph, nw, pw]
    return x.reshape(-1, dim, height, width)                            # [B, D, H, W]


# ---------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------

def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below it (timm's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """MV2 block: 1x1 expand + SiLU, 3x3 depthwise (strided) + SiLU, 1x1 project (linear).

    timm builds it as a ByobNet BottleneckBlock(bottle_in=True, linear_out=True); names follow that.
    The residual is added only when the block keeps the shape (stride 1, in == out channels).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: float):
        super().__init__()
        mid_chs = make_divisible(in_chs * expand_ratio)
        self.use_residual = stride == 1 and in_chs == out_chs
        self.conv1_1x1 = ConvNormAct(in_chs, mid_chs, 1)
        self.conv2_kxk = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs)
        self.conv3_1x1 = ConvNormAct(mid_chs, out_chs, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:                             # [B, C_in, H, W]
        out = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))         # [B, C_out, H/s, W/s]
        return x + out if self.use_residual else out


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: x + attn(norm1(x)), then x + mlp(norm2(x)) (timm ViT `Block` names)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.SiLU)

    def forward(self, x: Tensor) -> Tensor:                             # [B*P, N, D]
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """Local 3x3 conv, global attention across patches, then a 3x3 conv fusing both with the input."""

    def __init__(self, chs: int, transformer_dim: int, transformer_depth: int, num_heads: int,
                 mlp_ratio: float, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(chs, chs, 3)
        self.conv_1x1 = nn.Conv2d(chs, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[
            TransformerBlock(transformer_dim, num_heads, mlp_ratio) for _ in range(transformer_depth)
        ])
        self.norm = nn.LayerNorm(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, chs, 1)
        self.conv_fusion = ConvNormAct(2 * chs, chs, 3)

    def forward(self, x: Tensor) -> Tensor:                             # [B, C, H, W]
        shortcut = x
        height, width = int(x.shape[-2]), int(x.shape[-1])
        p = self.patch_size
        grid_h, grid_w = -(-height // p) * p, -(-width // p) * p        # whole patches (timm's rule)
        # local representation
        x = self.conv_1x1(self.conv_kxk(x))                             # [B, D, H, W]
        if (grid_h, grid_w) != (height, width):                         # e.g. 3x3 maps at 96x96 input
            x = F.interpolate(x, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        # global representation, one sequence per pixel position inside a patch
        patches = unfold_patches(x, p)                                  # [B*P, N, D]
        patches = self.norm(self.transformer(patches))
        x = fold_patches(patches, p, grid_h, grid_w)                    # [B, D, Hg, Wg]
        if (grid_h, grid_w) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)  # [B, D, H, W]
        # fusion with the block input
        x = self.conv_proj(x)                                           # [B, C, H, W]
        return self.conv_fusion(torch.cat([shortcut, x], dim=1))        # [B, C, H, W]


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------

def validate_input_shape(cfg: MobileViTConfig, x: Tensor) -> None:
    """Refuse, with one readable line, an input the patch grid cannot take."""
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise InputSizeError(f"{cfg.name} takes [B, 3, S, S] images; got shape {list(x.shape)}")
    cfg.validate_image_size(int(x.shape[2]))


def build_stages(in_channels: int, stages: tuple, transformer) -> tuple[nn.Sequential, int]:
    """Each stage's MV2 blocks (the first one strided), then its transformer block where it has one:
    `transformer(channels, stage)` (MobileViT's or MobileViTv2's). -> (stages, output channels)."""
    built, chs = [], in_channels
    for stage in stages:
        blocks: list[nn.Module] = []
        for index in range(stage.num_mv2_blocks):
            stride = stage.stride if index == 0 else 1
            blocks.append(InvertedResidual(chs, stage.channels, stride, stage.expand_ratio))
            chs = stage.channels
        if stage.transformer_depth:
            blocks.append(transformer(chs, stage))
        built.append(nn.Sequential(*blocks))
    return nn.Sequential(*built), chs


class MobileViTBackbone(nn.Module):
    """What MobileViT and MobileViTv2 share: the config, the input side, the stem and the stages, which are
    built from `block(channels, stage)` (the one place the two families differ inside the stages)."""

    def __init__(self, cfg, image_size: int | None, block):
        super().__init__()
        self.cfg = cfg
        self.image_size = cfg.default_image_size if image_size is None else image_size
        cfg.validate_image_size(self.image_size)
        self.stem = ConvNormAct(3, cfg.stem_channels, 3, stride=2)
        self.stages, self.stage_channels = build_stages(cfg.stem_channels, cfg.stages, block)

    @property
    def name(self) -> str:
        return self.cfg.name

    def features(self, x: Tensor) -> Tensor:                            # [B, 3, S, S]
        validate_input_shape(self.cfg, x)
        x = self.stem(x)                                                # [B, C0, S/2, S/2]
        return self.stages(x)                                           # [B, C4, S/32, S/32]


class MobileViT(MobileViTBackbone):
    """stem -> stages (MV2 blocks, then a MobileViT block in the last three) -> 1x1 conv -> pool -> fc."""

    def __init__(self, cfg: MobileViTConfig, num_classes: int = 1000, image_size: int | None = None):
        super().__init__(cfg, image_size, lambda c, stage: MobileViTBlock(
            c, stage.transformer_dim, stage.transformer_depth, cfg.num_heads, cfg.mlp_ratio, cfg.patch_size))
        self.final_conv = ConvNormAct(self.stage_channels, cfg.num_features, 1)
        self.head = ClassifierHead(cfg.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:                             # [B, 3, S, S]
        x = self.features(x)                                            # [B, C4, S/32, S/32]
        x = self.final_conv(x)                                          # [B, F, S/32, S/32]
        x = x.mean(dim=(2, 3))                                          # [B, F]
        return self.head(x)                                             # [B, num_classes]


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageConfig:
    channels: int                 # output channels of every block in the stage
    num_mv2_blocks: int           # MV2 (inverted residual) blocks; the first one carries the stride
    stride: int                   # stride of the first MV2 block
    expand_ratio: float           # MV2 hidden width = expand_ratio * block input channels
    transformer_dim: int = 0      # width d of the MobileViT block closing the stage (0: no such block)
    transformer_depth: int = 0    # transformer layers in that MobileViT block (0: no such block)


MOBILEVIT_PREPROCESS = Preprocess(   # timm's mobilevit_* data config
    resize=284,                      # floor(256 / crop_pct 0.9)
    crop=256,
    mean=(0.0, 0.0, 0.0),            # the network sees RGB scaled to [0, 1], nothing else
    std=(1.0, 1.0, 1.0),
    interpolation="bicubic",
)


class PatchGridSizes:
    """The input sizes a MobileViT (v1 or v2) config takes, from its `name`, `stages` and `patch_size`."""

    name: str
    stages: tuple[StageConfig, ...]
    patch_size: int

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this: the total stride of stem and stages."""
        stride = 2
        for stage in self.stages:
            stride *= stage.stride
        return stride

    @property
    def min_image_size(self) -> int:
        """The last MobileViT block needs at least one 2x2 patch: twice the total stride."""
        return self.size_multiple * self.patch_size

    def validate_image_size(self, size: int) -> None:
        """Raise InputSizeError unless `size` (the side of a square image) fits the stages.

        Sides that leave a MobileViT block a map not divisible by the patch size (96, 224, ...) are
        taken as timm takes them: the block resizes the map bilinearly to whole patches (v1 also back).
        """
        multiple = self.size_multiple
        if isinstance(size, bool) or not isinstance(size, int) or size < self.min_image_size or size % multiple:
            raise InputSizeError(
                f"{self.name} takes square images whose side is a multiple of {multiple}, "
                f"at least {self.min_image_size}; got {size}"
            )


@dataclass(frozen=True)
class MobileViTConfig(PatchGridSizes):
    name: str                           # registry name, also used in error messages
    stem_channels: int                  # output channels of the stride-2 3x3 stem conv
    stages: tuple[StageConfig, ...]     # five stages; the stem and stages 1-4 halve the resolution
    num_features: int                   # channels of the final 1x1 conv, fed to the classifier
    patch_size: int = 2                 # side of the pixel patches in every MobileViT block
    num_heads: int = 4                  # attention heads in every transformer layer
    mlp_ratio: float = 2.0              # transformer MLP hidden width / transformer width
    default_image_size: int = 256       # the side the published weights were trained at
    preprocess: Preprocess = MOBILEVIT_PREPROCESS
    family: str = "mobilevit"           # which model class builds this config


# Stage layout of MobileViT v1: 1 + 3 MV2 blocks, then three stages of one strided MV2 block and one
# MobileViT block with 2, 4 and 3 transformer layers. Numbers as in the paper's Table 4 and timm.
VARIANTS: dict[str, MobileViTConfig] = {
    "mobilevit_xxs": MobileViTConfig(
        "mobilevit_xxs", stem_channels=16, num_features=320, stages=(
            StageConfig(16, num_mv2_blocks=1, stride=1, expand_ratio=2.0),
            StageConfig(24, num_mv2_blocks=3, stride=2, expand_ratio=2.0),
            StageConfig(48, num_mv2_blocks=1, stride=2, expand_ratio=2.0, transformer_dim=64, transformer_depth=2),
            StageConfig(64, num_mv2_blocks=1, stride=2, expand_ratio=2.0, transformer_dim=80, transformer_depth=4),
            StageConfig(80, num_mv2_blocks=1, stride=2, expand_ratio=2.0, transformer_dim=96, transformer_depth=3),
        ),
    ),
    "mobilevit_xs": MobileViTConfig(
        "mobilevit_xs", stem_channels=16, num_features=384, stages=(
            StageConfig(32, num_mv2_blocks=1, stride=1, expand_ratio=4.0),
            StageConfig(48, num_mv2_blocks=3, stride=2, expand_ratio=4.0),
            StageConfig(64, num_mv2_blocks=1, stride=2, expand_ratio=4.0, transformer_dim=96, transformer_depth=2),
            StageConfig(80, num_mv2_blocks=1, stride=2, expand_ratio=4.0, transformer_dim=120, transformer_depth=4),
            StageConfig(96, num_mv2_blocks=1, stride=2, expand_ratio=4.0, transformer_dim=144, transformer_depth=3),
        ),
    ),
    "mobilevit_s": MobileViTConfig(
        "mobilevit_s", stem_channels=16, num_features=640, stages=(
            StageConfig(32, num_mv2_blocks=1, stride=1, expand_ratio=4.0),
            StageConfig(64, num_mv2_blocks=3, stride=2, expand_ratio=4.0),
            StageConfig(96, num_mv2_blocks=1, stride=2, expand_ratio=4.0, transformer_dim=144, transformer_depth=2),
            StageConfig(128, num_mv2_blocks=1, stride=2, expand_ratio=4.0, transformer_dim=192, transformer_depth=4),
            StageConfig(160, num_mv2_blocks=1, stride=2, expand_ratio=4.0, transformer_dim=240, transformer_depth=3),
        ),
    ),
}
