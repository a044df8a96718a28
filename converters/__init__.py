"""Targets: one module per output format, one registry (see base.py)."""
from .base import TARGETS, Target, get_target

__all__ = ["TARGETS", "Target", "get_target"]
