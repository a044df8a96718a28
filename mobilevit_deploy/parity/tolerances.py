"""The named parity bounds every target builds its tolerances from, and `tolerance_for`.

Each target declares `tolerances: dict[Precision, Tolerance]` (one entry per precision it converts),
built from the bounds below, so a third-party target brings its own without touching this module.
The checker and the tests read a target's bound through `tolerance_for(target, precision)`.

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


FP32 = Tolerance(max_rel=5e-6, cosine_min=0.999999, sqnr_db=90.0)
FP16 = Tolerance(max_rel=2e-2, cosine_min=0.9995, sqnr_db=40.0, top1_agreement=0.99)
INT8 = Tolerance(cosine_min=0.98, sqnr_db=15.0, top1_agreement=0.95)
WEIGHTS_8BIT = Tolerance(cosine_min=0.995, sqnr_db=20.0, top1_agreement=0.97)    # 8-bit / 6-bit weights, float activations
WEIGHTS_LOWBIT = Tolerance(cosine_min=0.95, sqnr_db=10.0, top1_agreement=0.85)   # 4-bit weights, float activations

# Integrity: a file against its replica (replica.py), PyTorch computing at the file's own precision, so
# only the engine's own rounding is left. Floors measured on the reference checkpoints at 64x64 (4 synthetic
# + 32 test images; AMD EPYC, ai-edge-litert 2.3.0, executorch 1.5.1), bounds 3-5 dB / 4x under them:
# - fp16 weights, fp32 compute (LiteRT): max_rel 1.1e-5 (mobilevit_xxs), 6.6e-5 (swin_micro), SQNR 106 and
#   93 dB; against the float model the same files sit at 1.4e-3 and 3.3e-4. Bound max_rel 3e-4.
# - int8, ExecuTorch's XNNPACK: SQNR 34.6 / 35.9 dB, cosine 0.9985 / 0.9994 (against fp32: 30.5 / 28.4 dB).
# - int8, LiteRT: no bound. A correct file is as far from its replica as from fp32 (SQNR 30.5 / 28.2 against
#   30.3 / 26.7 dB; random mobilevitv2_050: 16 dB): its int8 LOGISTIC is a lookup table, the difference grows
#   through the network. The weight audit (parity/audit.py) proves those files (tflite target, INT8_ON_LITERT).
FP16_REPLICA = Tolerance(max_rel=3e-4, cosine_min=0.999999, sqnr_db=75.0)
INT8_REPLICA = Tolerance(cosine_min=0.995, sqnr_db=30.0, top1_agreement=0.95)


def tolerance_for(target, precision: Precision) -> Tolerance:
    """The bound `target` (anything with `name` and `tolerances`) declares for `precision`."""
    try:
        return target.tolerances[precision]
    except KeyError:
        from ..errors import UnknownNameError
        known = sorted(f"{target.name}-{p.value}" for p in target.tolerances)
        raise UnknownNameError("target-precision pair", f"{target.name}-{precision.value}", known) from None
