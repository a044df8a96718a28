"""Runners: one interface (see base.py) over every engine."""
from .base import Runner

__all__ = ["Runner"]
