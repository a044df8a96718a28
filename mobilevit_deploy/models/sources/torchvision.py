"""torchvision `swin_t` / `swin_s` / `swin_b` (torchvision/models/swin_transformer.py).

`features` is one flat Sequential: 0 = patch embedding (conv, Permute, LayerNorm), then the stages'
block lists at odd indices and a PatchMerging between them at even ones (features.2, .4, .6). Its
PatchMerging concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2], the order of
ours and timm's, so `reduction` weights load as they are. The MLP is torchvision's `ops.MLP`
(Linear, GELU, Dropout, Linear, Dropout): the linears are mlp.0 and mlp.3.
"""
from __future__ import annotations

from .table import RenameTable

TORCHVISION_SWIN = RenameTable(
    source="torchvision", family="swin", description="torchvision Swin",
    rules=(
        (r"^patch_embed\.proj\.", "features.0.0."),
        (r"^patch_embed\.norm\.", "features.0.2."),
        (r"^layers\.(\d+)\.downsample\.", lambda m: f"features.{2 * int(m[1])}."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.", lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}."),
        (r"\.mlp\.fc1\.", ".mlp.0."),
        (r"\.mlp\.fc2\.", ".mlp.3."),
        (r"^head\.fc\.", "head."),
    ),
    signature=r"^features\.0\.0\.weight$",
    derived=(r"\.relative_position_index$",),            # a persistent buffer in torchvision
)
