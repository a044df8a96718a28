"""timm (>= 0.9) names are ours: no renaming. Older checkpoints also hold buffers derived from the config."""
from __future__ import annotations

from .table import RenameTable

TIMM = RenameTable(
    source="timm", family=None, description="timm / mvdeploy",
    derived=(r"\.relative_position_index$", r"\.attn_mask$"),
)
