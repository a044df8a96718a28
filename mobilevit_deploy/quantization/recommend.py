"""What to ship: the fastest measured variant of a model within the accuracy bound."""
from __future__ import annotations

from dataclasses import dataclass

from .evaluate import VariantResult
from .report import ModelReport

ACCURACY_BOUND_PT = 0.5          # a variant to ship loses at most this many top-1 points against PyTorch fp32


@dataclass(frozen=True)
class Recommendation:
    """The variant to ship for one model: the fastest measured file within the accuracy bound."""

    model: str
    row: VariantResult
    latency_ratio: float | None      # latency / the same target's fp32 latency
    size_ratio: float | None

    def line(self) -> str:
        r = self.row
        ratios = ", ".join(part for part in (
            f"{self.latency_ratio:.2f}x the latency" if self.latency_ratio is not None else None,
            f"{self.size_ratio:.2f}x the size" if self.size_ratio is not None else None) if part)
        accuracy = "" if r.accuracy_delta is None else f", {r.accuracy_delta:+.2f} pt top-1"
        return (f"{self.model}: ship {r.target} {r.precision} ({r.size_bytes / 1e6:.2f} MB, "
                f"{r.latency_ms_median:.2f} ms{accuracy}; {ratios} of {r.target} fp32)")


def recommend(model: ModelReport, bound_pt: float = ACCURACY_BOUND_PT) -> Recommendation | None:
    """The fastest timed variant whose parity passed and whose accuracy is within `bound_pt` of PyTorch."""
    fit = [r for r in model.rows if r.latency_ms_median is not None and r.parity_passed
           and (r.accuracy_delta is None or r.accuracy_delta >= -bound_pt)]
    if not fit:
        return None
    best = min(fit, key=lambda r: r.latency_ms_median)
    fp32 = next((r for r in model.rows if r.target == best.target and r.precision == "fp32"
                 and r.latency_ms_median), None)
    return Recommendation(model.model, best, best.latency_ms_median / fp32.latency_ms_median if fp32 else None,
                          best.size_ratio)
