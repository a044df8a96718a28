"""Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030), parameter names as timm's current `swin_*`.

Reads leaves to root: roll and window partition (plain and export-safe) -> attention mask -> layers
(patch embedding, window attention, block, patch merging) -> stage -> model -> configs (VARIANTS).
As in timm >= 0.9 the model runs channels-last ([B, H, W, C]) and each stage after the first starts
with its patch merging (`layers.I.downsample`), so timm checkpoints load without renaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputSizeError
from ..spec import Preprocess
from .layers import ClassifierHead, Mlp

MASKED = -100.0   # added to attention logits between tokens from different regions (timm's value)


# ---------------------------------------------------------------------------------------------------
# Cyclic shift and windows. Plain versions first; the model uses the export-safe twins.
# ---------------------------------------------------------------------------------------------------

def roll_hw(x: Tensor, shift: int) -> Tensor:
    """`torch.roll(x, (shift, shift), dims=(1, 2))` on [B, H, W, C] for 0 < |shift| < H, W: slices and concats.

    Why: TFLite has no builtin roll (tf.roll needs the Flex/Select-TF-ops runtime) and converters
    lower aten.roll unevenly; slices and a concat per axis are builtin everywhere. The slice bounds
    are the shift alone (never derived from x.shape), so traced graphs stay static.
    """
    x = torch.cat([x[:, -shift:], x[:, :-shift]], dim=1)
    return torch.cat([x[:, :, -shift:], x[:, :, :-shift]], dim=2)


def window_partition_reference(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B*nW, window*window, C], written the obvious way (a rank-6 view)."""
    batch, height, width, chs = x.shape
    x = x.reshape(batch, height // window, window, width // window, window, chs)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, chs)


def window_reverse_reference(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """[B*nW, window*window, C] -> [B, H, W, C], the inverse of `window_partition_reference`."""
    chs = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, chs)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, chs)


def window_partition(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B*nW, window*window, C], equal to the reference but never above rank 5.

    Why: Core ML tensors stop at rank 5 and TFLite delegates (GPU, NPUs) refuse rank-6 transposes;
    folding the batch into the window-row axis keeps the one transpose at rank 5. Windows come out
    in the same order (image, window row, window column) as timm's.
    """
    _, height, width, chs = x.shape
    x = x.reshape(-1, window, width // window, window, chs)            # [B*nH, ws, nW_w, ws, C]
    x = x.permute(0, 2, 1, 3, 4)                                        # [B*nH, nW_w, ws, ws, C]
    return x.reshape(-1, window * window, chs)                          # [B*nW, ws*ws, C]


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """[B*nW, window*window, C] -> [B, H, W, C], equal to the reference but never above rank 5.

    Why: the same rank limits as `window_partition`.
    """
    chs = windows.shape[-1]
    x = windows.reshape(-1, width // window, window, window, chs)      # [B*nH, nW_w, ws, ws, C]
    x = x.permute(0, 2, 1, 3, 4)                                        # [B*nH, ws, nW_w, ws, C]
    return x.reshape(-1, height, width, chs)                            # [B, H, W, C]


def merge_patches_reference(x: Tensor) -> Tensor:
    """[B, H, W, C] -> [B, H/2, W/2, 4C]: each 2x2 neighbourhood side by side (timm's rank-6 view).

    Channel order is timm's (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), which the
    `reduction` weights of a checkpoint depend on.
    """
    batch, height, width, chs = x.shape
    x = x.reshape(batch, height // 2, 2, width // 2, 2, chs).permute(0, 1, 3, 4, 2, 5)
    return x.reshape(batch, height // 2, width // 2, 4 * chs)


def merge_patches(x: Tensor) -> Tensor:
    """[B, H, W, C] -> [B, H/2, W/2, 4C], equal to `merge_patches_reference` but never above rank 5.

    Why: the same rank limits as `window_partition`.
    """
    _, height, width, chs = x.shape
    x = x.reshape(-1, 2, width // 2, 2, chs).permute(0, 2, 3, 1, 4)    # [B*H/2, W/2, dw, dh, C]
    return x.reshape(-1, height // 2, width // 2, 4 * chs)              # [B, H/2, W/2, 4C]


def relative_position_index(window: int) -> Tensor:
    """[ws*ws, ws*ws] index into the (2ws-1)^2 bias table for every (query, key) pair in a window."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])              # [2, ws*ws]
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)      # [2, ws*ws, ws*ws], >= 0
    return delta[0] * (2 * window - 1) + delta[1]


def resize_relative_position_bias(table: Tensor, window: int) -> Tensor:
    """A [(2w-1)^2, heads] bias table for another window side: bicubic resize of each head's
    (2w-1) x (2w-1) grid of relative offsets (align_corners=False), as the Swin authors' fine-tuning code
    (and timm's checkpoint filter) does when a checkpoint trained at one size is loaded at another.
    The same window gives the table back unchanged."""
    rows, heads = table.shape
    old_side, new_side = int(round(rows ** 0.5)), 2 * window - 1
    if old_side == new_side:
        return table
    grid = table.T.reshape(1, heads, old_side, old_side)                # [1, h, 2w-1, 2w-1]
    grid = F.interpolate(grid.double(), size=(new_side, new_side), mode="bicubic", align_corners=False)
    return grid.reshape(heads, new_side * new_side).T.to(table.dtype).contiguous()  # [(2w'-1)^2, h]


def window_of_table(table: Tensor) -> int:
    """The window side a [(2w-1)^2, heads] bias table was made for."""
    return (int(round(table.shape[0] ** 0.5)) + 1) // 2


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """[nW, ws*ws, ws*ws] logits offset: 0 inside a region, MASKED across regions.

    After the cyclic shift a window can hold pixels from opposite image borders; they must not attend
    to each other. Regions are laid out on the window-padded map exactly as timm does.
    """
    padded_h = -(-height // window) * window
    padded_w = -(-width // window) * window
    region = torch.zeros(1, padded_h, padded_w, 1)
    bands = ((0, -window), (-window, -shift), (-shift, None))
    label = 0
    for h0, h1 in bands:
        for w0, w1 in bands:
            region[:, h0:h1, w0:w1, :] = label
            label += 1
    region = window_partition_reference(region, window).squeeze(-1)     # [nW, ws*ws]
    same = region[:, None, :] == region[:, :, None]                     # [nW, ws*ws, ws*ws]
    return torch.where(same, 0.0, MASKED)


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch conv, then LayerNorm; output channels-last."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:                             # [B, 3, H, W]
        x = self.proj(x).permute(0, 2, 3, 1)                            # [B, H/p, W/p, C]
        return self.norm(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.window_area = window * window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def init_own_parameters(self, generator: torch.Generator) -> None:
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02, generator=generator)

    def position_bias(self) -> Tensor:                                  # [h, N, N]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(self.window_area, self.window_area, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # [B*nW, N, C]
        _, num_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(-1, num_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                  # 3 x [B*nW, h, N, hd]
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias()  # [B*nW, h, N, N]
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape(-1, num_windows, self.num_heads, num_tokens, num_tokens)
            attn = (attn + mask[None, :, None]).reshape(-1, self.num_heads, num_tokens, num_tokens)
        x = attn.softmax(dim=-1) @ v                                    # [B*nW, h, N, hd]
        x = x.transpose(1, 2).reshape(-1, num_tokens, dim)              # [B*nW, N, C]
        return self.proj(x)


class SwinBlock(nn.Module):
    """x + (shifted) window attention, then x + MLP; both pre-norm.

    A feature map no larger than the window is one window: the window shrinks to it and the shift
    is dropped (timm). A map that windows do not tile is zero-padded on the bottom/right (timm).
    """

    def __init__(self, dim: int, num_heads: int, resolution: int, window: int, shifted: bool, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution                       # feature map side this block is built for
        self.window = min(window, resolution)
        self.shift = self.window // 2 if shifted and resolution > window else 0
        self.padded = -(-resolution // self.window) * self.window  # side after padding to whole windows
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        mask = shifted_window_mask(resolution, resolution, self.window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:                             # [B, H, W, C]
        x = x + self.window_attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def window_attention(self, x: Tensor) -> Tensor:                    # [B, H, W, C]
        # sizes come from the block (python ints), not x.shape, so exported graphs hold no shape math
        size, padded = self.resolution, self.padded
        if self.shift:
            x = roll_hw(x, -self.shift)
        if padded != size:
            x = F.pad(x, (0, 0, 0, padded - size, 0, padded - size))    # [B, Hp, Wp, C]
        windows = window_partition(x, self.window)                      # [B*nW, ws*ws, C]
        windows = self.attn(windows, self.attn_mask)                    # [B*nW, ws*ws, C]
        x = window_reverse(windows, self.window, padded, padded)        # [B, Hp, Wp, C]
        if padded != size:
            x = x[:, :size, :size]                                      # [B, H, W, C]
        if self.shift:
            x = roll_hw(x, self.shift)
        return x


class PatchMerging(nn.Module):
    """Each 2x2 neighbourhood -> one token: concat to 4C, LayerNorm, linear 4C -> 2C (no bias)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:                             # [B, H, W, C]
        x = merge_patches(x)                                            # [B, H/2, W/2, 4C]
        return self.reduction(self.norm(x))                             # [B, H/2, W/2, 2C]


class SwinStage(nn.Module):
    """Optional patch merging at the start (stages 1..3), then blocks alternating W-MSA and SW-MSA."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, resolution: int,
                 window: int, mlp_ratio: float, downsample: bool):
        super().__init__()
        self.downsample = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, num_heads, resolution, window, shifted=index % 2 == 1, mlp_ratio=mlp_ratio)
            for index in range(depth)
        ])

    def forward(self, x: Tensor) -> Tensor:                             # [B, H, W, C_in]
        return self.blocks(self.downsample(x))                          # [B, H', W', C]


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------

class SwinTransformer(nn.Module):
    """patch embedding -> four stages (stage i > 0 halves the map, doubles channels) -> norm -> pool -> fc.

    Attention masks depend on the feature map sizes, so a model is built for one image size.
    `window_size` (default: the config's) is the window side of every stage before it shrinks to
    small maps; `cfg.window_for(image_size)` gives windows that tile every map at that size.
    """

    def __init__(self, cfg: SwinConfig, num_classes: int = 1000, image_size: int | None = None,
                 window_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.image_size = cfg.default_image_size if image_size is None else image_size
        cfg.validate_image_size(self.image_size)
        self.window_size = cfg.window_size if window_size is None else window_size

        dims = [cfg.embed_dim * 2 ** i for i in range(len(cfg.depths))]
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        resolution = self.image_size // cfg.patch_size
        stages, in_dim = [], cfg.embed_dim
        for index, (dim, depth, heads) in enumerate(zip(dims, cfg.depths, cfg.num_heads)):
            resolution = resolution // 2 if index > 0 else resolution
            stages.append(SwinStage(in_dim, dim, depth, heads, resolution, self.window_size,
                                    cfg.mlp_ratio, downsample=index > 0))
            in_dim = dim
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = ClassifierHead(dims[-1], num_classes)

    @property
    def name(self) -> str:
        return self.cfg.name

    def forward(self, x: Tensor) -> Tensor:                             # [B, 3, S, S]
        self.validate_input_shape(x)
        x = self.patch_embed(x)                                         # [B, S/4, S/4, C]
        x = self.layers(x)                                              # [B, S/32, S/32, 8C]
        x = self.norm(x).mean(dim=(1, 2))                               # [B, 8C]
        return self.head(x)                                             # [B, num_classes]

    def validate_input_shape(self, x: Tensor) -> None:
        """Refuse, with one readable line, an input other than the size the masks were built for."""
        expected = [3, self.image_size, self.image_size]
        if x.dim() != 4 or list(x.shape[1:]) != expected:
            raise InputSizeError(
                f"{self.name} was built for [B, {', '.join(map(str, expected))}] inputs; got shape "
                f"{list(x.shape)} (create the model with image_size={x.shape[-1]} for another size)"
            )


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------

SWIN_PREPROCESS = Preprocess(         # timm's swin_* data config
    resize=248,                       # floor(224 / crop_pct 0.9)
    crop=224,
    mean=(0.485, 0.456, 0.406),       # ImageNet statistics
    std=(0.229, 0.224, 0.225),
    interpolation="bicubic",
)


@dataclass(frozen=True)
class SwinConfig:
    name: str                          # registry name, also used in error messages
    embed_dim: int                     # channels of stage 0; each later stage doubles them
    depths: tuple[int, ...]            # Swin blocks per stage
    num_heads: tuple[int, ...]         # attention heads per stage
    window_size: int = 7               # window side in tokens (shrinks to smaller feature maps)
    patch_size: int = 4                # side of the patch embedding conv (and its stride)
    mlp_ratio: float = 4.0             # MLP hidden width / block width
    default_image_size: int = 224      # the side the published weights were trained at
    preprocess: Preprocess = SWIN_PREPROCESS
    family: str = "swin"               # which model class builds this config

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this: the patch embedding, then a 2x2 merge per stage."""
        return self.patch_size * 2 ** (len(self.depths) - 1)

    def window_for(self, image_size: int) -> int:
        """The window that tiles every feature map at `image_size`: the config's window scaled with the
        side (side / 32 for every variant here: 7 at 224, 8 at 256, 6 at 192; the Swin authors fine-tune
        at 384 with 12). Used when weights trained at one side run at another."""
        return max(1, round(self.window_size * image_size / self.default_image_size))

    def validate_image_size(self, size: int) -> None:
        """Raise InputSizeError unless `size` (the side of a square image) tiles into patches and merges."""
        multiple = self.size_multiple
        if isinstance(size, bool) or not isinstance(size, int) or size < multiple or size % multiple:
            raise InputSizeError(
                f"{self.name} takes square images whose side is a multiple of {multiple}, "
                f"at least {multiple}; got {size}"
            )


VARIANTS: dict[str, SwinConfig] = {
    # Swin-T of the paper (timm: swin_tiny_patch4_window7_224).
    "swin_tiny": SwinConfig("swin_tiny", embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    # A phone-sized Swin: half the width of Swin-T, two blocks per stage, 24 channels per head.
    # No published weights; for export and runtime experiments.
    "swin_micro": SwinConfig("swin_micro", embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16)),
}
