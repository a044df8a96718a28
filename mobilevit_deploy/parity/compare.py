"""Parity metrics: pure numpy over a reference and a candidate output. Knows nothing about runtimes."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ShapeMismatchError

SQNR_CAP_DB = 300.0   # identical outputs have infinite SQNR; JSON has no infinity
# A reference whose every value is within this of zero carries no signal: float32's normal numbers stop at
# 1.2e-38, so such outputs come out of products that underflowed on the way (transformers' own init of a
# MobileViT gives logits of ~1e-43), their digits are rounding residue and a relative error on them means nothing.
NEAR_ZERO = 1e-30
# Outputs that vary by no more than this fraction of their magnitude are constant: float32 rounding alone
# moves logits by ~1e-7 of it, and any output that depends on its input moves by far more.
CONSTANT_SPREAD = 1e-6


@dataclass(frozen=True)
class Metrics:
    """How far a candidate's outputs [N, K] are from the reference's, sample by sample."""

    max_abs: float         # max |c - r| over everything
    mean_abs: float        # mean |c - r| over everything
    max_rel: float         # max over samples of max|c - r| / max|r| (error scaled by the reference's magnitude)
    cosine_min: float      # min over samples of cos(c, r)
    cosine_mean: float     # mean over samples of cos(c, r)
    sqnr_db: float         # 10 log10(sum r^2 / sum (c - r)^2) over everything, capped at 300 dB
    top1_agreement: float  # fraction of samples whose argmax agrees
    top5_overlap: float    # mean fraction of the reference's top-5 classes found in the candidate's top-5
    nonfinite: int         # NaN or Inf values in the candidate

    def to_dict(self) -> dict:
        return asdict(self)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity; two all-zero rows count as identical, one all-zero row as 0."""
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.where(both_zero, 1.0, out)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((candidate.astype(np.float64) - reference) ** 2))
    return sqnr_from_power(signal, noise)


def sqnr_from_power(signal: float, noise: float) -> float:
    """10 log10(signal / noise) for summed squares, within +-300 dB (no noise: +300, no signal: -300)."""
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(min(SQNR_CAP_DB, 10.0 * np.log10(signal / noise)))


def noise_added(sqnrs: list[float]) -> list[float]:
    """The noise power (relative to the signal's) each layer adds over the layer before, from the layers'
    SQNRs in network order; the input and a layer at the cap count as exact, and a layer cleaner than the
    one before adds 0. Per-layer error measures rank by this: dB drops overweight layers still clean."""
    previous, out = 0.0, []
    for value in sqnrs:
        relative = 0.0 if value >= SQNR_CAP_DB else 10.0 ** (-value / 10.0)     # noise power / signal power
        out.append(max(0.0, relative - previous))
        previous = relative
    return out


def compare(reference: np.ndarray, candidate: np.ndarray, classes: bool = True) -> Metrics:
    """Metrics of candidate against reference; both [N, K] (anything else is flattened per sample).
    `classes=False` for outputs that are not class scores (a layer's feature map): top-1 and top-5
    agreement are not measured and read 1.0."""
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    c = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if r.shape != c.shape:
        raise ShapeMismatchError(f"the artifact gives {c.shape[1]} values per image, the model {r.shape[1]}"
                                 if len(r) == len(c) else f"reference {r.shape} and candidate {c.shape} differ in shape")
    nonfinite = int(np.size(c) - np.count_nonzero(np.isfinite(c)))
    c_finite = np.where(np.isfinite(c), c, 0.0)   # metrics of the finite part; nonfinite is its own check
    err = np.abs(c_finite - r)
    scale = np.maximum(np.max(np.abs(r), axis=1), np.finfo(np.float64).tiny)
    cos = cosine(r, c_finite)
    top1, top5 = _agreement(r, c_finite) if classes else (1.0, 1.0)
    return Metrics(
        max_abs=float(err.max()),
        mean_abs=float(err.mean()),
        max_rel=float(np.max(err.max(axis=1) / scale)),
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        sqnr_db=sqnr_db(r, c_finite),
        top1_agreement=top1,
        top5_overlap=top5,
        nonfinite=nonfinite,
    )


def degenerate(reference: np.ndarray) -> str | None:
    """Why reference outputs [N, K] carry no signal a comparison could judge (every value near zero, one
    constant value, or the same outputs for every image), or None when they carry one."""
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if not r.size or not np.all(np.isfinite(r)):
        return None                                  # nonfinite outputs are the comparison's own failure
    peak = float(np.max(np.abs(r)))
    if peak < NEAR_ZERO:
        return f"all {r.size} outputs on {len(r)} images are within {peak:.3g} of zero"
    spread = float(np.ptp(r))
    if spread <= CONSTANT_SPREAD * peak:
        return f"all {r.size} outputs on {len(r)} images are {float(r.flat[0]):.6g} (spread {spread:.3g})"
    across = float(np.max(np.ptp(r, axis=0)))
    if len(r) > 1 and across <= CONSTANT_SPREAD * peak:
        return (f"all {len(r)} images give the same outputs (they differ by at most {across:.3g}, "
                f"{across / peak:.2g} of the largest output {peak:.3g})")
    return None


def _agreement(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """(fraction of samples whose argmax agrees, mean fraction of the reference's top-5 in the candidate's)."""
    overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(_topk(r, 5), _topk(c, 5))]
    return float(np.mean(np.argmax(r, axis=1) == np.argmax(c, axis=1))), float(np.mean(overlap))
