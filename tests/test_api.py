"""The Python API: a user's own nn.Module (what it accepts, one clear error for what it cannot take), and
the one convert sequence the API shares with the CLI."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import mobilevit_deploy as mvd
from mobilevit_deploy import pipeline
from mobilevit_deploy.errors import CalibrationRequiredError, InvalidValueError
from mobilevit_deploy.pipeline import prepare_module
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import BaseTarget
from mvdeploy_targets.onnx import OnnxTarget
from toys import toy_net


class Pair(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x.amax((2, 3))


def test_a_custom_module_is_prepared_from_a_probe():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))
    prepared = prepare_module(net, 32, name="mine")
    assert (prepared.name, prepared.num_classes, prepared.image_size, prepared.trained) == ("mine", 7, 32, True)
    assert prepared.reference is None and prepared.preprocess.crop == 32


@pytest.mark.parametrize("module,size,needle", [
    (Pair(), 32, "must return one tensor"),
    (nn.Linear(4, 2), 32, "does not take a [1, 3, 32, 32] image batch"),
    ("not a module", 32, "expected a torch.nn.Module"),
    (nn.Identity(), 0, "image_size must be"),
])
def test_what_a_custom_module_cannot_be(module, size, needle):
    with pytest.raises(InvalidValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        prepare_module(module, size)


def test_convert_needs_an_image_size_for_a_custom_module(tmp_path):
    with pytest.raises(InvalidValueError, match="image_size"):
        mvd.convert(nn.Identity(), target="onnx", out=tmp_path)


def test_a_custom_module_converts_with_parity(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4))
    result = mvd.convert(net, target="onnx", image_size=48, out=tmp_path, name="small")
    assert result.artifact.path.name == "small-fp32.onnx"
    assert result.report.passed and result.report.metrics.max_rel < 5e-6
    assert result.report.weights == "user module small"


# -- one convert sequence: the CLI and the API choose the same parity images; a spec is validated once --

class CalibratedOnnx(OnnxTarget):
    """The ONNX target, but its fp32 takes calibration images (and ignores them): the cheapest target on
    which the convert sequence must load calibration before it chooses the parity images."""

    name = "onnx-calibrated"
    suffix = ".calibrated.onnx"
    calibrated = (Precision.fp32,)


class TwoPrecisionOnnx(OnnxTarget):
    """The ONNX target taking fp16 too (written as fp32): two precisions that convert in a second."""

    name = "onnx-two"
    suffix = ".two.onnx"
    precisions = (Precision.fp32, Precision.fp16)


@pytest.fixture
def validate_calls(monkeypatch):
    """Every BaseTarget.validate, counted by the precision of the spec it validated."""
    calls = []
    original = BaseTarget.validate

    def counting(self, spec):
        calls.append(spec.precision)
        return original(self, spec)
    monkeypatch.setattr(BaseTarget, "validate", counting)
    return calls


def _photos(folder, count: int):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def test_the_cli_and_the_api_check_parity_on_the_same_images(tmp_path, monkeypatch, validate_calls):
    """User weights (here random) with a calibration folder and no --data: the case where the CLI used to
    check parity on held-out real photos and the API on synthetic images only. Same arguments, same
    samples block: sources, counts and the digest of the image values."""
    from typer.testing import CliRunner

    from mobilevit_deploy import targets
    from mobilevit_deploy.cli import app

    installed = targets.registry()
    monkeypatch.setattr(targets, "registry", lambda: {**installed, CalibratedOnnx.name: CalibratedOnnx()})
    calib = _photos(tmp_path / "calib", 10)
    ran = CliRunner().invoke(app, ["convert", "mobilevit_xxs", "--target", CalibratedOnnx.name, "--weights", "random",
                                   "--image-size", "64", "--calib-data", str(calib), "--calib-samples", "4",
                                   "--out", str(tmp_path / "cli")])
    assert ran.exit_code == 0, ran.output
    mvd.convert("mobilevit_xxs", target=CalibratedOnnx.name, weights="random", image_size=64, calib_data=calib,
                calib_samples=4, out=tmp_path / "api")
    name = f"mobilevit_xxs-fp32{CalibratedOnnx.suffix}.parity.json"
    by_cli, by_api = (json.loads((tmp_path / side / name).read_text())["samples"] for side in ("cli", "api"))
    assert by_cli == by_api
    assert (by_api["synthetic"], by_api["real"]) == (8, 6)          # 10 photos, 4 went to calibration
    assert by_api["source"] == f"{calib}, disjoint from the calibration sample"
    assert validate_calls == [Precision.fp32, Precision.fp32]       # once in each run


def test_a_spec_is_validated_once_per_file_and_never_skipped(tmp_path, validate_calls):
    prepared = prepare_module(toy_net(), 32, name="toy")
    target = TwoPrecisionOnnx()
    run = pipeline.convert_all(prepared, target, [prepared.spec(Precision.fp32), prepared.spec(Precision.fp16)],
                               tmp_path, check=False)
    assert validate_calls == [Precision.fp32, Precision.fp16]       # the sequence's, none inside target.convert
    assert [r.artifact.path.name for r in run.results] == ["toy-fp32.two.onnx", "toy-fp16.two.onnx"]
    validate_calls.clear()
    target.convert(prepared.model, prepared.spec(Precision.fp16), tmp_path / "direct.onnx")
    assert validate_calls == [Precision.fp16]                        # a plain spec: validated there, once
    validate_calls.clear()
    valid = target.validate(prepared.spec(Precision.fp16))
    target.convert(prepared.model, valid, tmp_path / "again.onnx")
    assert validate_calls == [Precision.fp16]                        # a valid one: taken as it is


def test_a_calibrating_precision_without_images_is_refused_by_convert(tmp_path):
    target = CalibratedOnnx()
    prepared = prepare_module(toy_net(), 32, name="toy")
    with pytest.raises(CalibrationRequiredError, match="--calib-data synthetic"):
        target.convert(prepared.model, target.validate(prepared.spec()), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
