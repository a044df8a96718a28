"""Where checkpoints come from: one rename table per source and model family.

`TIMM` (our own names) fits every model; the foreign tables are told apart by a key only they use.
"""
from __future__ import annotations

from .hf import HF_MOBILEVIT, HF_MOBILEVITV2, HF_SWIN
from .table import RenameTable
from .timm import TIMM
from .torchvision import TORCHVISION_SWIN

FOREIGN_TABLES: tuple[RenameTable, ...] = (HF_MOBILEVIT, HF_MOBILEVITV2, HF_SWIN, TORCHVISION_SWIN)


def table_for(source: str, family: str | None) -> RenameTable | None:
    """The table of `source` for models of `family`; None when that source has no such model."""
    if source == TIMM.source:
        return TIMM
    return next((t for t in FOREIGN_TABLES if t.source == source and t.family == family), None)


__all__ = ["FOREIGN_TABLES", "HF_MOBILEVIT", "HF_MOBILEVITV2", "HF_SWIN", "TIMM", "TORCHVISION_SWIN", "RenameTable",
           "table_for"]
