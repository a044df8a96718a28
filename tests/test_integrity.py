"""Parity as tight at fp16 and int8 as at fp32 (issue 24): the replica, the weight audit, and a negative
control per fault class.

The correct files are the matrix's (conftest `model_file`: the reference checkpoints at 64x64, calibrated on
64 train images, checked on 4 synthetic + 32 test images). Each fault of `faults.py` is written into a copy,
and the copy is checked the way `mvdeploy check` checks it (`pipeline.check_artifact`, on 2 synthetic + 8
test images: the audit reads no images, and the faults move every image), with the replica built once per
model and precision. LiteRT int8 files have no replica bound (INT8_ON_LITERT): the audit
carries them. The ExecuTorch int8 replica is rebuilt by `mvdeploy check` from the recipe its parity report
recorded, and fails a file that is not what it should be.
"""
from dataclasses import replace

import numpy as np
import pytest
from conftest import CONVERTED_SIZE as SIZE

import faults
from mobilevit_deploy import pipeline
from mobilevit_deploy.calibration import calibration_again
from mobilevit_deploy.fusion import fuse
from mobilevit_deploy.parity import parity_path
from mobilevit_deploy.parity.audit import StoredTensor, audit, rounding_bound, with_folded_norms
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target, load_artifact
from mvdeploy_targets.tflite.target import INT8_ON_LITERT

PRECISIONS = (Precision.fp16, Precision.int8)
MODELS = ("mobilevit_xxs", "swin_micro")
# The tensor each fault lands in (faults.py picks the largest conv/linear weight or bias, or the largest
# buffer), named as the audit must name it: measured on the reference checkpoints.
FAULTY_MODULE = {
    ("mobilevit_xxs", "weight"): "stages.4.1.conv_fusion.conv",
    ("mobilevit_xxs", "bias"): "final_conv.conv",
    ("mobilevit_xxs", "buffer"): "stages.4.1.conv_fusion.conv",
    ("swin_micro", "weight"): "layers.3.blocks.0.mlp.fc1",
    ("swin_micro", "bias"): "layers.3.blocks.0.mlp.fc1",
}
WHERE = {"scale_weights": "weight", "move_int8": "weight", "scale_quant": "weight", "zero_bias": "bias",
         "flip_bytes": "buffer"}
# Measured floors of correct files against their replica (this machine, AMD EPYC): LiteRT fp16 max_rel 1.1e-5
# (mobilevit_xxs) and 6.6e-5 (swin_micro); ExecuTorch int8 SQNR 35.9 dB (swin_micro). Each leaves 3x room.
FP16_FLOOR_MAX_REL = 2e-4
INT8_FLOOR_SQNR_DB = 31.0


@pytest.fixture(scope="module")
def checker(model_file):
    """(model, precision) -> (the correct ModelFile, check(path) -> ParityReport): the replica, inputs and
    fused model are built once and shared by every faulty copy."""
    made = {}

    def get(name: str, precision: Precision):
        if (name, precision) not in made:
            correct = model_file(name, "tflite", precision)
            prepared = pipeline.prepare_model(name, image_size=SIZE)
            exported = fuse(prepared.model).model
            inputs = pipeline.parity_inputs(prepared, synthetic=2, real=8)
            target, artifact = load_artifact(correct.path)
            recipe = correct.parity["recipe"]
            replica = target.replica(exported, replace(artifact, converter=recipe["converter"]), None)

            def check(path):
                _, faulty = load_artifact(path)
                return pipeline.check_artifact(replace(faulty, converter=recipe["converter"], replica=replica),
                                               target, prepared, inputs, exported=exported)
            made[name, precision] = (correct, check)
        return made[name, precision]
    return get


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: p.value)
def test_a_correct_file_passes_integrity_and_the_audit(checker, name, precision):
    correct, _ = checker(name, precision)
    parity = correct.parity
    assert parity["passed"], parity["failures"]
    integrity = parity["integrity"]
    if precision is Precision.fp16:
        assert integrity["checked"] and integrity["failures"] == [], integrity
        assert "rounded to fp16" in integrity["reference"]
        assert integrity["metrics"]["max_rel"] < FP16_FLOOR_MAX_REL < parity["metrics"]["max_rel"]
    else:                                     # said, with the measured reason (tflite target, INT8_ON_LITERT)
        assert integrity == {"checked": False, "why": INT8_ON_LITERT}
    weights = parity["audit"]
    assert weights["read"] and weights["failures"] == [] and weights["worst_in_bounds"] <= 1.0
    assert weights["matched"] >= 0.9 * weights["stored"], weights        # 147/150 and 105/115 at fp16
    assert parity["recipe"]["converter"] == "litert-torch"


FAULT_CASES = [pytest.param(name, precision, fault, id=f"{name}-{precision.value}-{fault}")
               for name in MODELS for precision in PRECISIONS
               for fault in (faults.FP16 if precision is Precision.fp16 else faults.INT8)]


@pytest.mark.parametrize("name,precision,fault", FAULT_CASES)
def test_each_fault_fails_check_and_the_audit_names_the_module(checker, tmp_path, name, precision, fault):
    correct, check = checker(name, precision)
    faulty = tmp_path / correct.path.name
    faulty.write_bytes(faults.FP16.get(fault, faults.INT8.get(fault))(correct.path.read_bytes()))
    report = check(faulty)
    assert not report.passed
    weights = [line for line in report.failures if line.startswith("weights: ")]
    if fault == "ln_epsilon":
        assert any("epsilon 1e-05" in line for line in weights), report.failures
        return
    where = WHERE[fault]
    module = FAULTY_MODULE.get((name, where)) or {Precision.fp16: "layers.3.blocks.1.mlp.fc2",
                                                  Precision.int8: "layers.3.blocks.0.mlp.fc1"}[precision]
    assert any(f"(module {module}" in line for line in weights), report.failures


def test_the_fp16_integrity_bound_catches_what_accuracy_lets_through(checker, tmp_path):
    """The integrity comparison on its own, apart from the audit: swin_micro's LayerNorm epsilon x10 moves the
    fp16 file by max_rel 1.3e-3 from its replica (bound 3e-4), within the accuracy bound (2e-2)."""
    correct, check = checker("swin_micro", Precision.fp16)
    faulty = tmp_path / correct.path.name
    faulty.write_bytes(faults.ln_epsilon(correct.path.read_bytes()))
    report = check(faulty)
    assert [line for line in report.failures if line.startswith("integrity: ")], report.failures
    assert not [line for line in report.failures if not line.startswith(("integrity: ", "weights: "))]


def test_check_rebuilds_the_int8_replica_of_a_pte_from_its_recorded_recipe(cli, model_file):
    """`mvdeploy check` of an ExecuTorch int8 file whose parity report records its recipe: the PT2E graph
    is calibrated again on the same images and the file sits within the integrity bound of it."""
    correct = model_file("swin_micro", "executorch", Precision.int8)
    assert correct.parity["recipe"]["calibration"]["samples"] > 0, correct.parity["recipe"]
    result = cli("check", correct.path, "--model", "swin_micro")
    assert result.returncode == 0, result.stderr
    assert ("integrity pass: against the PT2E int8 graph of the XNNPACK quantizer, calibrated again"
            in " ".join(result.stdout.split())), result.stdout
    assert correct.parity["integrity"]["metrics"]["sqnr_db"] > INT8_FLOOR_SQNR_DB


def test_the_int8_integrity_bound_fails_a_pte_that_is_not_its_replica(model_file):
    """Negative control for ExecuTorch int8: the correct file against the replica of a model whose classifier
    weights are 5% larger (what a file with its head scaled so would be measured against) fails integrity:
    measured SQNR 26.1 dB (bound 30, correct 35.9), while it stays 10 dB inside the accuracy bound."""
    import torch

    correct = model_file("swin_micro", "executorch", Precision.int8)
    prepared = pipeline.prepare_model("swin_micro", image_size=SIZE)
    exported = fuse(prepared.model).model
    with torch.no_grad():
        exported.get_submodule("head.fc").weight.mul_(1.05)
    target, artifact = load_artifact(correct.path)
    calibration = calibration_again(prepared, correct.parity["recipe"]["calibration"])
    replica = target.replica(exported, artifact, calibration)
    inputs = pipeline.parity_inputs(prepared, synthetic=2, real=8)
    report = pipeline.check_artifact(replace(artifact, replica=replica), target, prepared, inputs, exported=exported)
    assert [line for line in report.failures if line.startswith("integrity: ")], report.failures


def test_files_made_by_plain_tools_pass(tmp_path):
    """Correct files that mvdeploy did not make: litert-torch alone (fp16, from the unfused model: it folds
    BatchNorm itself), torch.onnx and coremltools. What cannot be checked is said, not skipped."""
    import coremltools as ct
    import litert_torch
    import torch
    from litert_torch.generative.quantize import quant_recipes

    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=SIZE)
    example = (torch.zeros(1, 3, SIZE, SIZE),)
    litert_torch.convert(prepared.model, example, quant_config=quant_recipes.full_fp16_recipe()).export(
        str(tmp_path / "plain-fp16.tflite"))
    torch.onnx.export(prepared.model, example, str(tmp_path / "plain.onnx"), dynamo=False, opset_version=17)
    ct.convert(torch.jit.trace(prepared.model, example), convert_to="mlprogram",
               inputs=[ct.TensorType(name="x", shape=example[0].shape)]).save(str(tmp_path / "plain.mlpackage"))
    for path in ("plain-fp16.tflite", "plain.onnx", "plain.mlpackage"):
        artifact, report = pipeline.check_file(tmp_path / path, "mobilevit_xxs")
        assert report.passed, (path, report.failures)
        said = report.proof_lines()
        assert len(said) == 2, said
        if path == "plain-fp16.tflite":
            assert report.integrity["checked"] and report.integrity["metrics"]["max_rel"] < FP16_FLOOR_MAX_REL
        else:
            assert said[0].startswith("integrity not checked: ")
        assert report.audit["read"] and report.audit["matched"] >= 100 and report.audit["failures"] == [], path


def test_an_int8_file_without_its_recipe_says_the_replica_is_not_rebuilt(model_file, tmp_path):
    correct = model_file("swin_micro", "executorch", Precision.int8)
    alone = tmp_path / correct.path.name
    alone.write_bytes(correct.path.read_bytes())                 # no parity report beside it
    _, report = pipeline.check_file(alone, "swin_micro")
    assert report.passed
    assert report.integrity == {"checked": False, "why": "the int8 recipe's calibration is unknown (no parity report "
                                                          "of mvdeploy's beside the file records it)"}
    assert report.proof_lines()[1].startswith("weights not audited: the XNNPACK delegate")


# ---------------------------------------------------------------- the audit's own rules, on tiny arrays

def _fp16(name, values):
    values = np.asarray(values, np.float16)
    return StoredTensor(name, values.astype(np.float64), rounding_bound(values), "float16")


def test_audit_matches_by_value_in_any_axis_order_and_flags_two_ulps():
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    params = {"stem.conv.weight": conv, "stem.conv.bias": bias, "head.weight": rng.standard_normal((4, 8))}
    stored = [_fp16("w", conv.transpose(0, 2, 3, 1)), _fp16("b", bias)]       # TFLite's OHWI
    clean = audit(stored, params)
    assert (clean.matched, clean.failures, clean.unmatched) == (2, [], [])
    nudged = conv.transpose(0, 2, 3, 1).astype(np.float16).astype(np.float64)
    nudged[0, 0, 0, 0] += 2 * np.spacing(np.float16(nudged[0, 0, 0, 0]))      # two fp16 ulps: outside
    broken = audit([StoredTensor("w", nudged, stored[0].bound, "float16"), stored[1]], params)
    assert len(broken.failures) == 1 and broken.failures[0].startswith("stem.conv.weight (module stem.conv): 1 of 216")


def test_audit_pairs_a_zeroed_bias_by_its_name_and_counts_what_it_cannot_match():
    params = {"a.fc.weight": np.eye(4), "a.fc.bias": np.arange(1.0, 5.0), "b.fc.bias": np.arange(5.0, 9.0)}
    zeroed = StoredTensor("Model/Block_a/Linear_fc;", np.zeros(4), np.full(4, 1e-3), "int32 bias")
    stray = StoredTensor("mask", np.full((2, 3), 7.0), np.zeros((2, 3)), "float32")
    result = audit([zeroed, stray], params)
    assert result.unmatched == ["mask"]
    assert len(result.failures) == 1 and result.failures[0].startswith("a.fc.bias (module a.fc): 4 of 4")
    ambiguous = StoredTensor("unnamed", np.zeros(4), np.full(4, 1e-3), "int32 bias")
    assert audit([ambiguous], params).unmatched == ["unnamed"]            # two biases left: never a guess


def test_audit_knows_a_layernorm_folded_into_the_next_linear():
    rng = np.random.default_rng(1)
    params = {"blk.norm.weight": rng.uniform(0.5, 1.5, 6), "blk.norm.bias": rng.standard_normal(6),
              "blk.fc.weight": rng.standard_normal((5, 6)), "blk.fc.bias": rng.standard_normal(5)}
    folded_w = params["blk.fc.weight"] * params["blk.norm.weight"]
    folded_b = params["blk.fc.bias"] + params["blk.fc.weight"] @ params["blk.norm.bias"]
    stored = [StoredTensor("w", folded_w, np.abs(folded_w) * 2.0 ** -20, "float32"),
              StoredTensor("b", folded_b.astype(np.float32).astype(np.float64), np.abs(folded_b) * 2.0 ** -23, "float32")]
    assert audit(stored, params).failures != []                             # without the fold: off
    result = audit(stored, with_folded_norms(params))
    assert (result.matched, result.failures) == (2, [])


def test_audit_wants_each_norm_epsilon_among_the_scalars():
    params = {"fc.weight": np.eye(3)}
    eps = StoredTensor("eps", np.array([1e-5], np.float32).astype(np.float64), np.zeros(1), "float32")
    other = StoredTensor("eps", np.array([1e-4], np.float32).astype(np.float64), np.zeros(1), "float32")
    assert audit([eps], params, {1e-5: ["norm1"]}).failures == []
    assert audit([other], params, {1e-5: ["norm1", "norm2"]}).failures == [
        "the normalization epsilon 1e-05 of 2 module(s) (norm1, ...) is not among the file's scalar constants"]


def test_targets_declare_the_integrity_bounds_they_reproduce():
    tflite, executorch = get_target("tflite"), get_target("executorch")
    assert set(tflite.integrity) == {Precision.fp16}
    assert set(executorch.integrity) == {Precision.int8}
    assert "not read" in executorch.weights_unread
