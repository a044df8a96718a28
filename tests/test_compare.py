"""Parity metrics on tiny hand-computed arrays, and the named bounds' verdicts."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from mobilevit_deploy.parity import FP16, FP32, INT8, WEIGHTS_8BIT, WEIGHTS_LOWBIT, compare, tolerance_for
from mobilevit_deploy.parity.compare import SQNR_CAP_DB, cosine, noise_added, sqnr_from_power
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
    for tol in (FP32, FP16, INT8, WEIGHTS_8BIT, WEIGHTS_LOWBIT):
        assert any("NaN/Inf" in line for line in tol.failures(m))


def test_cosine_zero_rows():
    z = np.zeros((1, 3))
    assert cosine(z, z)[0] == 1.0
    assert cosine(z, np.ones((1, 3)))[0] == 0.0


def test_sqnr_from_power_and_noise_added_by_hand():
    assert sqnr_from_power(100.0, 1.0) == pytest.approx(20.0)
    assert sqnr_from_power(1.0, 0.0) == SQNR_CAP_DB and sqnr_from_power(0.0, 1.0) == -SQNR_CAP_DB
    # relative noise 1e-3, 1e-2, 5e-3: the second layer adds 9e-3, the third (cleaner) adds nothing
    added = noise_added([30.0, 20.0, 10 * math.log10(200)])
    assert added == pytest.approx([1e-3, 9e-3, 0.0])
    assert noise_added([SQNR_CAP_DB, SQNR_CAP_DB]) == [0.0, 0.0]               # no noise at all: exactly none added


def test_feature_maps_are_compared_without_classes():
    r = np.array([[3.0, 4.0], [1.0, 0.0]])
    c = np.array([[3.0, 5.0], [0.0, 1.0]])
    m, with_classes = compare(r, c, classes=False), compare(r, c)
    assert m.top1_agreement == 1.0 and m.top5_overlap == 1.0       # not measured: a feature map has no classes
    assert m.sqnr_db == with_classes.sqnr_db and m.max_rel == with_classes.max_rel and with_classes.top1_agreement == 0.5


def test_all_zero_candidate_fails_int8():
    """litert-torch's dynamic int8 once produced all-zero outputs: such an artifact must fail."""
    r = np.random.default_rng(0).normal(size=(4, 10))
    m = compare(r, np.zeros_like(r))
    assert INT8.failures(m)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        compare(np.zeros((1, 3)), np.zeros((1, 4)))


def test_fp32_bound_passes_float_rounding_and_fails_a_1e4_change():
    tol = FP32
    r = np.array([[1.0, -2.0, 4.0]])
    ok = compare(r, r * (1 + 1e-7))
    bad = compare(r, r + np.array([[0.0, 0.0, 4e-4]]))   # 1e-4 of the max |r|
    assert tol.failures(ok) == []
    assert any(line.startswith("max_rel") for line in tol.failures(bad))


def test_top1_bound_is_skipped_for_random_weights():
    r = np.array([[1.0, 0.99]])
    c = np.array([[0.99, 1.0]])
    tol = INT8
    m = compare(r, c)
    assert any("top-1" in f for f in tol.failures(m, trained=True))
    assert not any("top-1" in f for f in tol.failures(m, trained=False))


def test_tolerance_for_reads_the_targets_own_bounds_and_lists_them_when_missing():
    from mobilevit_deploy.errors import UnknownNameError
    target = SimpleNamespace(name="onnx", tolerances={Precision.fp32: FP32})
    assert tolerance_for(target, Precision.fp32) is FP32
    with pytest.raises(UnknownNameError, match="onnx-fp32"):
        tolerance_for(target, Precision.int4)


# ---------------------------------------------------------------------------------------------------
# Degenerate references: outputs no comparison can judge
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reference, needle", [
    (np.zeros((2, 3)), "all 6 outputs on 2 images are within 0 of zero"),
    (np.array([[2.5e-43, -1.4e-43], [3.0e-43, 7.0e-45]]), "within 3e-43 of zero"),   # transformers' MobileViT init
    (np.full((3, 2), 0.25), "all 6 outputs on 3 images are 0.25 (spread 0)"),
    (np.array([[1.0, -2.0, 3.0], [1.0, -2.0, 3.0 + 1e-7]]), "all 2 images give the same outputs (they differ "
                                                           "by at most 1e-07, 3.3e-08 of the largest output 3)"),
])
def test_degenerate_references_are_named(reference, needle):
    from mobilevit_deploy.parity.compare import degenerate

    assert needle in degenerate(reference)


def test_references_with_a_signal_are_not_degenerate():
    """Negative controls: logits that differ between images (by hand, by 1e-5 of their size, and a real
    random-init model's on the synthetic parity images), and tiny but normal float32 magnitudes."""
    import torch

    from mobilevit_deploy.data import synthetic_images
    from mobilevit_deploy.models import create_model, model_config
    from mobilevit_deploy.parity.compare import degenerate

    assert degenerate(np.array([[1.0, -2.0, 3.0], [0.5, 2.0, -1.0]])) is None
    assert degenerate(np.array([[1.0, -2.0, 3.0], [1.0, -2.0, 3.0 + 3e-5]])) is None
    assert degenerate(np.array([[1e-20, -2e-20], [3e-20, 0.0]])) is None          # small, yet normal numbers
    assert degenerate(np.array([[0.1, 0.2, 0.3]])) is None                         # one image: nothing to vary
    model = create_model("mobilevit_xxs", num_classes=10, image_size=64)
    images = synthetic_images(4, 64, model_config("mobilevit_xxs").preprocess.with_size(64), seed=0)
    with torch.no_grad():
        assert degenerate(model(images).numpy()) is None
