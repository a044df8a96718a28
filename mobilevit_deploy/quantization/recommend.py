"""What to ship: the fastest measured variant of a model within the accuracy bound, where a latency
difference inside the measured spread is a tie, broken by size."""
from __future__ import annotations

from dataclasses import dataclass

from .evaluate import VariantResult
from .report import ModelReport

ACCURACY_BOUND_PT = 0.5          # a variant to ship loses at most this many top-1 points against PyTorch fp32


@dataclass(frozen=True)
class Recommendation:
    """The variant to ship for one model: the smallest file among those timed as fast as the fastest."""

    model: str
    row: VariantResult
    latency_ratio: float | None      # latency / the same target's fp32 latency
    size_ratio: float | None
    tied_with: tuple[VariantResult, ...] = ()   # variants as fast within the spread, that the smaller file beat
    host: str | None = None          # where latency was timed
    caveat: str | None = None        # why that host's int8 speed is not a phone's

    def line(self) -> str:
        r = self.row
        ratios = ", ".join(part for part in (
            f"{self.latency_ratio:.2f}x the latency" if self.latency_ratio is not None else None,
            f"{self.size_ratio:.2f}x the size" if self.size_ratio is not None else None) if part)
        accuracy = "" if r.accuracy_delta is None else f", {r.accuracy_delta:+.2f} pt top-1"
        line = (f"{self.model}: ship {r.target} {r.precision} ({r.size_bytes / 1e6:.2f} MB, "
                f"{r.latency_ms_median:.2f} ms{accuracy}; {ratios} of {r.target} fp32)")
        if self.tied_with:
            line += ("; a tie in latency (within the measured p90) with "
                     + ", ".join(f"{t.target} {t.precision} ({t.latency_ms_median:.2f} ms, {t.size_bytes / 1e6:.2f} MB)"
                                 for t in self.tied_with) + ", broken by size")
        if self.host:
            line += f"; timed on {self.host}"
        if self.caveat:
            line += f" ({self.caveat})"
        return line


def recommend(model: ModelReport, bound_pt: float = ACCURACY_BOUND_PT, host: str | None = None,
              caveat: str | None = None) -> Recommendation | None:
    """Among timed variants whose parity passed and whose accuracy is within `bound_pt` of PyTorch: those
    whose median is within the fastest one's spread (its p90) are tied, and the smallest of them wins."""
    fit = [r for r in model.rows if r.latency_ms_median is not None and r.parity_passed
           and (r.accuracy_delta is None or r.accuracy_delta >= -bound_pt)]
    if not fit:
        return None
    fastest = min(fit, key=lambda r: r.latency_ms_median)
    spread = max(fastest.latency_ms_p90 or fastest.latency_ms_median, fastest.latency_ms_median)
    tied = [r for r in fit if r.latency_ms_median <= spread]
    best = min(tied, key=lambda r: (r.size_bytes, r.latency_ms_median))
    fp32 = next((r for r in model.rows if r.target == best.target and r.precision == "fp32"
                 and r.latency_ms_median), None)
    return Recommendation(model.model, best, best.latency_ms_median / fp32.latency_ms_median if fp32 else None,
                          best.size_ratio, tuple(r for r in tied if r is not best), host, caveat)
