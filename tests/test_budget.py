"""Steering int8: --keep-float checked in the written file, and the accuracy budget on a case that loses
accuracy.

The case: swin_micro's reference checkpoint with one channel of `layers.2.downsample.norm` scaled by 512
and the matching input column of `layers.2.downsample.reduction` divided by 512. The float model computes
the same function (powers of two: exact), but `reduction` reads that channel per-tensor in int8, so the
other channels lose their resolution: the TFLite int8 file loses 2.7 points of top-1 (99.11% -> 96.44% on
the 450 test digits), and keeping `reduction` float gives 99.11% back.
"""
import json

import numpy as np
import pytest
import torch

from mobilevit_deploy import pipeline
from mobilevit_deploy.errors import ConversionError, InvalidValueError
from mobilevit_deploy.fusion import fuse
from mobilevit_deploy.parity import parity_path
from mobilevit_deploy.quantization.budget import AccuracyBudget, budget_paths
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target

from conftest import CONVERTED_SIZE

NORM, MADE, CHANNEL, FACTOR = "layers.2.downsample.norm", "layers.2.downsample.reduction", 1, 512.0
SIBLING = "layers.2.blocks.0.attn.proj"           # a linear the budget leaves int8: the check's negative control
PROJ = "stages.4.1.transformer.0.attn.proj"       # mobilevit_xxs: what `debug` ranks first on its int8 file


def with_outlier(prepared: pipeline.PreparedModel, divide: bool = True) -> pipeline.PreparedModel:
    """The outlier channel, made in place (divide=False: the norm scaled only, a different function)."""
    with torch.no_grad():
        norm, consumer = prepared.model.get_submodule(NORM), prepared.model.get_submodule(MADE)
        norm.weight[CHANNEL] *= FACTOR
        norm.bias[CHANNEL] *= FACTOR
        if divide:
            consumer.weight[:, CHANNEL] /= FACTOR
    return prepared


def outlier_swin() -> pipeline.PreparedModel:
    return with_outlier(pipeline.prepare_model("swin_micro", image_size=CONVERTED_SIZE))


def test_the_outlier_keeps_the_float_model():
    """Negative control: scaling the norm without dividing the consumer changes the logits."""
    images = torch.from_numpy(pipeline.parity_inputs(outlier_swin(), synthetic=2, real=6).images)
    reference = pipeline.prepare_model("swin_micro", image_size=CONVERTED_SIZE)
    broken = with_outlier(pipeline.prepare_model("swin_micro", image_size=CONVERTED_SIZE), divide=False)
    with torch.no_grad():
        expected = reference.model(images)
        same = outlier_swin().model(images)
        other = broken.model(images)
    scale = float(expected.abs().max())
    assert float((same - expected).abs().max()) < 1e-4 * scale
    assert float((other - expected).abs().max()) > 0.1 * scale


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "out"
    run = pipeline.convert_model(outlier_swin(), "tflite", "int8", out, calib_samples=64,
                                 budget=AccuracyBudget(0.5))
    return run, out


def test_the_budget_keeps_the_layer_that_was_made_float(budget_run):
    run, out = budget_run
    budget = run.budget
    assert budget.images == 450 and budget.reference_accuracy > 0.98
    first, last = budget.steps[0], budget.steps[-1]
    assert first.keep_float == [] and first.drop >= 2.0            # plain int8 loses at least 2 points
    assert first.noisiest[0]["module"] == MADE                    # the file's own ranking names the made layer
    assert len(budget.steps) == 2 and last.keep_float == [MADE]    # kept float first, and enough
    assert last.drop <= 0.5 and budget.met
    assert all(s.size_bytes > 1e6 for s in budget.steps) and last.size_bytes > first.size_bytes   # fp32 weights
    assert first.latency_ratio == 1.0 and last.latency_ratio > 0 and budget.timing.startswith("control:")
    names = sorted(p.name for p in out.iterdir())                 # only the chosen step, nothing staged
    assert names == ["swin_micro-int8.tflite", *(f"swin_micro-int8.tflite{s}"
                                                 for s in (".budget.html", ".budget.json", ".parity.json"))]


def test_keep_float_is_in_the_file_its_notes_and_its_report(budget_run):
    from mvdeploy_targets.tflite.target import int8_modules

    run, out = budget_run
    (result,) = run.results
    path = out / "swin_micro-int8.tflite"
    assert result.artifact.path == path and result.report.passed
    names = {n for n, _ in fuse(outlier_swin().model).model.named_modules() if n}
    assert int8_modules(path, (MADE,), names) == {}                # no op of it reads int8 ...
    assert int8_modules(path, (SIBLING,), names)[SIBLING] >= 1     # ... where its neighbour's do
    parity = json.loads(parity_path(path).read_text())
    assert parity["recipe"]["keep_float"] == [MADE]
    assert any(MADE in n and "checked in the file" in n for n in parity["notes"])
    assert any("accuracy budget met" in n for n in result.artifact.notes)
    steps = json.loads(budget_paths(path)[0].read_text())
    assert steps["met"] and [s["keep_float"] for s in steps["steps"]] == [[], [MADE]]
    assert "data:image/png;base64," in budget_paths(path)[1].read_text()


def test_tflite_file_check_sees_int8_in_a_plain_file(model_file):
    """The check on the shared plain mobilevit_xxs int8 file: every module is still int8 there."""
    from mvdeploy_targets.tflite.target import int8_modules

    plain = model_file("mobilevit_xxs", "tflite", Precision.int8)
    names = {n for n, _ in fuse(pipeline.prepare_model("mobilevit_xxs").model).model.named_modules() if n}
    found = int8_modules(plain.path, (PROJ, "stages.4.1.conv_proj"), names)
    assert found[PROJ] >= 1 and found["stages.4.1.conv_proj"] >= 1
    assert int8_modules(plain.path, ("no.such.module",), names) == {"no.such.module": -1}


def test_executorch_file_check_sees_int8_in_a_plain_file(model_file):
    from mobilevit_deploy.formats.pte import read_pte
    from mvdeploy_targets.executorch.target import float_weights_missing

    plain = model_file("mobilevit_xxs", "executorch", Precision.int8)
    model = fuse(pipeline.prepare_model("mobilevit_xxs").model).model
    assert float_weights_missing(read_pte(plain.path), model, (PROJ, "stages.4.1.norm")) == ([PROJ], ["stages.4.1.norm"])


@pytest.mark.slow          # an ExecuTorch int8 conversion: about 140 s of CPU on this machine
def test_executorch_keep_float_is_in_the_file(tmp_path):
    from mobilevit_deploy.formats.pte import read_pte
    from mvdeploy_targets.executorch.target import float_weights_missing

    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=CONVERTED_SIZE)
    run = pipeline.convert_model(prepared, "executorch", "int8", tmp_path, calib_samples=64, keep_float=PROJ)
    (result,) = run.results
    assert result.report.passed and result.artifact.keep_float == (PROJ,)
    model = fuse(prepared.model).model
    assert float_weights_missing(read_pte(result.artifact.path), model, (PROJ, "stages.4.1.conv_proj")) == \
        (["stages.4.1.conv_proj"], [])                              # the kept one is fp32, its neighbour is not
    parity = json.loads(parity_path(result.artifact.path).read_text())
    assert parity["recipe"]["keep_float"] == [PROJ] and any(PROJ in n for n in parity["notes"])


@pytest.mark.parametrize("target, precisions, keep, needle", [
    ("tflite", "int8", "stages.4.1.transformer.0.attn.projx", "did you mean 'stages.4.1.transformer.0.attn.proj'"),
    ("tflite", "int8", "a,,b", "an empty module name"),
    ("tflite", "fp16", PROJ, "tflite fp16 cannot (it can at int8, int8-static)"),
    ("onnx", "fp32", PROJ, "onnx fp32 cannot (it has no per-module quantization)"),
], ids=["unknown-module", "empty-name", "float-precision", "no-quantizer"])
def test_keep_float_refused_before_any_work(tmp_path, target, precisions, keep, needle):
    if get_target(target).unavailable_reason():
        pytest.skip(get_target(target).unavailable_reason())
    with pytest.raises((InvalidValueError, ConversionError)) as info:
        pipeline.convert_model("mobilevit_xxs", target, precisions, tmp_path / "out", image_size=CONVERTED_SIZE,
                               keep_float=keep)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_budget_that_cannot_be_met_is_one_line_and_nothing_written(run, tmp_path):
    """Through the CLI, with the outlier weights as a user's file (trained at 64: its Swin bias tables say so)
    and the held-out digits as an --eval-data folder: no layer allowed to stay float (--budget-steps 0), so
    the budget cannot be met: one line naming the best step, exit 1, no output folder."""
    from safetensors.torch import save_file

    from mobilevit_deploy.digits import digit_image, digits_split
    from toys import digit_pngs

    weights = tmp_path / "outlier.safetensors"
    save_file({k: v.contiguous() for k, v in outlier_swin().model.state_dict().items()}, weights)
    digit_pngs(tmp_path / "eval", 450)                             # the whole test split
    train = digits_split().train
    for i in range(64):                                            # calibration: training digits, disjoint
        (tmp_path / "calib" / f"{train.labels[i]}").mkdir(parents=True, exist_ok=True)
        digit_image(train.images[i]).save(tmp_path / "calib" / f"{train.labels[i]}" / f"t{i:03d}.png")
    out = tmp_path / "out"
    result = run("convert", "swin_micro", "--weights", weights, "--image-size", 64, "--precision", "int8",
                 "--calib-data", tmp_path / "calib", "--eval-data", tmp_path / "eval", "--max-accuracy-drop", 0.5,
                 "--budget-steps", 0, "--no-check", "--out", out)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "cannot be met in 1 step:" in lines[0] and "keeping in float: nothing" in lines[0], lines
    assert float(lines[0].split("lost ")[1].split(" points")[0]) > 1.0     # 1.78 measured: twice the budget
    assert not out.exists()


def test_a_budget_without_evaluation_images_is_refused(run, tmp_path):
    """A weights file has no reference split: without --eval-data, one line, before any work."""
    from mobilevit_deploy.checkpoints import REFERENCE_CHECKPOINTS

    out = tmp_path / "out"
    result = run("convert", "mobilevit_xxs", "--weights", REFERENCE_CHECKPOINTS["mobilevit_xxs"].path,
                 "--precision", "int8", "--image-size", 64, "--calib-data", "synthetic",
                 "--max-accuracy-drop", "1", "--out", out)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pass --eval-data DIR" in lines[0], lines
    assert not out.exists()


def test_coreml_file_check_tells_float_weights_from_compressed(model_file):
    """Core ML compresses weights only: a kept module's weights stay plain float consts. The check on
    the shared files: fp32 holds every weight plain, int8 holds the same module compressed."""
    from mobilevit_deploy.formats.mlpackage import load_proto
    from mvdeploy_targets.coreml.recipes import kept_constants
    from mvdeploy_targets.coreml.target import compressed_modules

    model = fuse(pipeline.prepare_model("swin_micro", image_size=CONVERTED_SIZE).model).model
    kept = kept_constants(model, (MADE, NORM))
    assert kept == {MADE: {"layers_2_downsample_reduction_weight"}, NORM: set()}     # a LayerNorm has no matrix
    fp32 = load_proto(model_file("swin_micro", "coreml", Precision.fp32).path)
    int8 = load_proto(model_file("swin_micro", "coreml", Precision.int8).path)
    assert compressed_modules(fp32, kept) == [NORM] and compressed_modules(int8, kept) == [MADE, NORM]


@pytest.mark.slow          # a Core ML int8 conversion
def test_coreml_keep_float_is_in_the_file(tmp_path):
    from mobilevit_deploy.formats.mlpackage import load_proto
    from mvdeploy_targets.coreml.recipes import kept_constants
    from mvdeploy_targets.coreml.target import compressed_modules

    prepared = outlier_swin()
    run = pipeline.convert_model(prepared, "coreml", "int8", tmp_path, keep_float=MADE)
    (result,) = run.results
    assert result.report.passed and result.artifact.keep_float == (MADE,)
    kept = kept_constants(fuse(prepared.model).model, (MADE, SIBLING))
    assert compressed_modules(load_proto(result.artifact.path), kept) == [SIBLING]   # kept plain, neighbour compressed
    parity = json.loads(parity_path(result.artifact.path).read_text())
    assert parity["recipe"]["keep_float"] == [MADE] and any(MADE in n for n in parity["notes"])


@pytest.mark.parametrize("target, precisions, weights, budget, needle", [
    ("opaque", "int8", None, AccuracyBudget(1), "opaque's engine does not expose"),
    ("tflite", "fp16", None, AccuracyBudget(1), "tflite keeps layers float at: int8, int8-static (asked for fp16)"),
    ("tflite", "int8", None, AccuracyBudget(-1), "--max-accuracy-drop is in points of top-1 (0 to 100); got -1"),
    ("tflite", "int8", "random", AccuracyBudget(1), "it needs trained weights"),
], ids=["no-intermediates", "float-precision", "negative", "random-weights"])
def test_a_budget_is_refused_before_any_work(tmp_path, target, precisions, weights, budget, needle):
    """"opaque": a third-party target that keeps layers float but whose engine exposes no intermediate values
    (every built-in target's does)."""
    if target == "opaque":
        from mvdeploy_targets.tflite.target import TFLiteTarget

        class Opaque(TFLiteTarget):
            name = "opaque"
            intermediates = None
        target = Opaque()
    elif get_target(target).unavailable_reason():
        pytest.skip(get_target(target).unavailable_reason())
    with pytest.raises((InvalidValueError, ConversionError)) as info:
        pipeline.convert_model("mobilevit_xxs", target, precisions, tmp_path / "out", weights=weights,
                               image_size=CONVERTED_SIZE, budget=budget)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
