"""Parity metrics on tiny hand-computed arrays, and the tolerance table's verdicts."""
import math

import numpy as np
import pytest

from mobilevit_deploy.parity import TOLERANCES, compare, tolerance_for
from mobilevit_deploy.parity.compare import SQNR_CAP_DB, cosine
from mobilevit_deploy.spec import Precision


def test_identical_outputs_are_perfect():
    r = np.array([[1.0, 2.0, 3.0]])
    m = compare(r, r.copy())
    assert m.max_abs == 0 and m.mean_abs == 0 and m.max_rel == 0
    assert m.cosine_min == pytest.approx(1.0) and m.sqnr_db == SQNR_CAP_DB
    assert m.top1_agreement == 1.0 and m.top5_overlap == 1.0 and m.nonfinite == 0


def test_hand_computed_metrics():
    r = np.array([[3.0, 4.0], [1.0, 0.0]])
    c = np.array([[3.0, 5.0], [0.0, 1.0]])
    m = compare(r, c)
    # errors: [[0, 1], [1, 1]]
    assert m.max_abs == 1.0
    assert m.mean_abs == pytest.approx(0.75)
    # per-sample max err / max |r|: 1/4 and 1/1
    assert m.max_rel == pytest.approx(1.0)
    # cos row 0: (9 + 20) / (5 * sqrt(34)); row 1: 0
    assert m.cosine_min == pytest.approx(0.0)
    assert m.cosine_mean == pytest.approx((29 / (5 * math.sqrt(34))) / 2)
    # SQNR: signal 9+16+1 = 26, noise 0+1+1+1 = 3
    assert m.sqnr_db == pytest.approx(10 * math.log10(26 / 3))
    # argmax: row 0 both 1; row 1 ref 0, cand 1
    assert m.top1_agreement == 0.5


def test_top5_overlap_counts_shared_classes():
    r = np.array([[9, 8, 7, 6, 5, 0, 0, 0.0]])
    c = np.array([[9, 8, 7, 0, 0, 6.5, 6.4, 0.0]])   # top-5 shares 9, 8, 7 -> 3/5
    assert compare(r, c).top5_overlap == pytest.approx(0.6)


def test_nonfinite_values_are_counted_and_fail_every_precision():
    r = np.array([[1.0, 2.0, 3.0]])
    c = np.array([[1.0, np.nan, np.inf]])
    m = compare(r, c)
    assert m.nonfinite == 2
    for tol in TOLERANCES.values():
        assert any("NaN/Inf" in line for line in tol.failures(m))


def test_cosine_zero_rows():
    z = np.zeros((1, 3))
    assert cosine(z, z)[0] == 1.0
    assert cosine(z, np.ones((1, 3)))[0] == 0.0


def test_all_zero_candidate_fails_int8():
    """litert-torch's dynamic int8 once produced all-zero outputs: such an artifact must fail."""
    r = np.random.default_rng(0).normal(size=(4, 10))
    m = compare(r, np.zeros_like(r))
    assert tolerance_for("tflite", Precision.int8).failures(m)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        compare(np.zeros((1, 3)), np.zeros((1, 4)))


def test_fp32_tolerance_reads_from_the_table():
    tol = tolerance_for("onnx", Precision.fp32)
    r = np.array([[1.0, -2.0, 4.0]])
    ok = compare(r, r * (1 + 1e-7))
    bad = compare(r, r + np.array([[0.0, 0.0, 4e-4]]))   # 1e-4 of the max |r|
    assert tol.failures(ok) == []
    assert any(line.startswith("max_rel") for line in tol.failures(bad))


def test_top1_bound_is_skipped_for_random_weights():
    r = np.array([[1.0, 0.99]])
    c = np.array([[0.99, 1.0]])
    tol = tolerance_for("tflite", Precision.int8)
    m = compare(r, c)
    assert any("top-1" in f for f in tol.failures(m, trained=True))
    assert not any("top-1" in f for f in tol.failures(m, trained=False))


def test_unknown_pair_lists_known():
    from mobilevit_deploy.errors import UnknownNameError
    with pytest.raises(UnknownNameError, match="onnx-fp32"):
        tolerance_for("onnx", Precision.int4)
