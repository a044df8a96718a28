"""ONNX parity for every variant at a small input size, and the fp32 check's power."""
import copy

import pytest
import torch

from mobilevit_deploy import pipeline
from mobilevit_deploy.models import MODELS
from mobilevit_deploy.parity import tolerance_for
from mobilevit_deploy.spec import ExportSpec, Layout, Precision
from mobilevit_deploy.targets import get_target

SMALL = 64


@pytest.fixture(scope="module")
def prepared_models():
    return {name: pipeline.prepare_model(name, image_size=SMALL) for name in MODELS}


@pytest.mark.parametrize("name", list(MODELS), ids=lambda n: f"{n}-onnx-fp32")
def test_onnx_parity_every_variant(name, prepared_models, tmp_path):
    prepared = prepared_models[name]
    result = pipeline.convert(prepared, "onnx", prepared.spec(Precision.fp32), tmp_path)
    m = result.report.metrics
    assert result.report.passed, result.report.failures
    assert m.max_rel < tolerance_for(get_target("onnx"), Precision.fp32).max_rel
    assert m.top1_agreement == 1.0
    assert result.fused_pairs > 0 if name.startswith("mobilevit") else result.fused_pairs == 0


def test_nhwc_layout_matches(prepared_models, tmp_path):
    prepared = prepared_models["mobilevit_xxs"]
    result = pipeline.convert(prepared, "onnx", prepared.spec(Precision.fp32, layout=Layout.nhwc), tmp_path)
    assert result.artifact.inputs[0].shape == (1, SMALL, SMALL, 3)
    assert result.report.passed, result.report.failures


def test_fp32_check_catches_a_one_percent_attention_change(prepared_models, tmp_path):
    """Random weights make a weak test: a 1% change in one attention projection moves the logits
    by ~1e-5 of their range. The fp32 bound must still catch it."""
    prepared = prepared_models["mobilevit_xxs"]
    broken = copy.deepcopy(prepared.model)
    proj = dict(broken.named_modules())["stages.2.1.transformer.0.attn.proj"]
    with torch.no_grad():
        proj.weight.mul_(1.01)
    artifact = get_target("onnx").convert(broken, ExportSpec("mobilevit_xxs", SMALL), tmp_path / "b.onnx")
    report = pipeline.check_artifact(artifact, get_target("onnx"), prepared, pipeline.parity_inputs(prepared))
    assert not report.passed
    assert any(f.startswith("max_rel") for f in report.failures)
