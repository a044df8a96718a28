"""Parity checking: pure-numpy metrics, the one tolerance table, and the report."""
from .compare import Metrics, compare
from .report import ParityReport, parity_path
from .tolerances import TOLERANCES, Tolerance, tolerance_for

__all__ = ["Metrics", "compare", "ParityReport", "parity_path", "TOLERANCES", "Tolerance", "tolerance_for"]
