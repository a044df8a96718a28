"""Parity checking: pure-numpy metrics, the named bounds targets declare their tolerances from, and the report."""
from .compare import Metrics, compare
from .report import ParityReport, parity_path
from .tolerances import FP16, FP32, INT8, WEIGHTS_8BIT, WEIGHTS_LOWBIT, Tolerance, tolerance_for

__all__ = ["Metrics", "compare", "ParityReport", "parity_path", "Tolerance", "tolerance_for",
           "FP32", "FP16", "INT8", "WEIGHTS_8BIT", "WEIGHTS_LOWBIT"]
