"""The one tolerance table, keyed by (target, precision). Tests and the checker read it from here.

Why these numbers (measured on this project's models; see README "Parity"):
- fp32: a correct conversion stays near 1e-6 of the logits' magnitude, while scaling one attention
  projection of a random-init mobilevit_xxs by 1% moves the logits by only ~1e-5. So the fp32 bound
  is tight (max_rel 5e-6 on float engines) and a test proves that 1% change fails it.
- fp16: rounding every op to half precision reaches ~5e-3 relative; the bound leaves 2-4x room.
- int8 and compressed weights: judged by cosine, SQNR and top-1 agreement (meaningful on real images
  and trained weights; on random weights top-1 of near-flat logits is noise, so the bound is looser there).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..spec import Precision
from .compare import Metrics


@dataclass(frozen=True)
class Tolerance:
    max_rel: float | None = None       # upper bound on Metrics.max_rel
    cosine_min: float | None = None    # lower bound on Metrics.cosine_min
    sqnr_db: float | None = None       # lower bound on Metrics.sqnr_db
    top1_agreement: float | None = None  # lower bound, applied only to trained weights

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def failures(self, m: Metrics, trained: bool = True) -> list[str]:
        """One readable line per bound the metrics break (empty: within tolerance)."""
        out = []
        if m.nonfinite:
            out.append(f"{m.nonfinite} NaN/Inf values in the outputs")
        if self.max_rel is not None and not m.max_rel <= self.max_rel:
            out.append(f"max_rel {m.max_rel:.3g} > {self.max_rel:.3g} (max abs {m.max_abs:.3g})")
        if self.cosine_min is not None and not m.cosine_min >= self.cosine_min:
            out.append(f"cosine_min {m.cosine_min:.6f} < {self.cosine_min}")
        if self.sqnr_db is not None and not m.sqnr_db >= self.sqnr_db:
            out.append(f"SQNR {m.sqnr_db:.1f} dB < {self.sqnr_db} dB")
        if trained and self.top1_agreement is not None and not m.top1_agreement >= self.top1_agreement:
            out.append(f"top-1 agreement {m.top1_agreement:.3f} < {self.top1_agreement}")
        return out


_FP32 = Tolerance(max_rel=5e-6, cosine_min=0.999999, sqnr_db=90.0)
_FP16 = Tolerance(max_rel=2e-2, cosine_min=0.9995, sqnr_db=40.0, top1_agreement=0.99)
_INT8 = Tolerance(cosine_min=0.98, sqnr_db=15.0, top1_agreement=0.95)
_WEIGHTS_8BIT = Tolerance(cosine_min=0.995, sqnr_db=20.0, top1_agreement=0.97)
_WEIGHTS_LOWBIT = Tolerance(cosine_min=0.95, sqnr_db=10.0, top1_agreement=0.85)

TOLERANCES: dict[tuple[str, Precision], Tolerance] = {
    ("onnx", Precision.fp32): _FP32,
    ("tflite", Precision.fp32): _FP32,
    ("tflite", Precision.fp16): _FP16,
    ("tflite", Precision.int8): _INT8,
    ("tflite", Precision.int8_static): _INT8,
    ("tflite", Precision.int8_dynamic): _INT8,
    ("coreml", Precision.fp32): _FP32,
    ("coreml", Precision.fp16): _FP16,
    ("coreml", Precision.int8): _WEIGHTS_8BIT,
    ("coreml", Precision.palettize6): _WEIGHTS_8BIT,
    ("coreml", Precision.palettize4): _WEIGHTS_LOWBIT,
    ("coreml", Precision.int4): _WEIGHTS_LOWBIT,
    ("coreml", Precision.w8a8): _INT8,
    ("executorch", Precision.fp32): _FP32,
    ("executorch", Precision.int8): _INT8,
    ("executorch", Precision.int8_dynamic): _INT8,
}


def tolerance_for(target: str, precision: Precision) -> Tolerance:
    try:
        return TOLERANCES[(target, precision)]
    except KeyError:
        from ..errors import UnknownNameError
        known = sorted(f"{t}-{p.value}" for t, p in TOLERANCES)
        raise UnknownNameError("target-precision pair", f"{target}-{precision.value}", known) from None
