"""The Core ML target: every precision converts and its saved package computes what PyTorch computes.

Off macOS the runner is the MIL reference interpreter (tests/test_mil.py pins it down); parity is
judged by the one tolerance table. The toy model (tests/toys.py) keeps the matrix fast; the real
models run under `-m slow`.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools", reason="coremltools is not installed")

from mobilevit_deploy.errors import (  # noqa: E402
    CalibrationRequiredError, ConversionError, OptionsError, TargetUnavailableError, UnknownNameError,
)
from mobilevit_deploy.formats.mlpackage import load_proto  # noqa: E402
from mobilevit_deploy.mil import Interpreter, load_program  # noqa: E402
from mobilevit_deploy.parity import compare, tolerance_for  # noqa: E402
from mobilevit_deploy.runners.coreml import CoreMLRunner  # noqa: E402
from mobilevit_deploy.spec import Calibration, ExportSpec, Layout, Precision, Preprocess  # noqa: E402
from mobilevit_deploy.targets import Target, get_target  # noqa: E402
from mvdeploy_targets.coreml import TARGET  # noqa: E402
from toys import SIZE, convert, reference, toy_images, toy_net  # noqa: E402

IMAGENET = Preprocess(resize=36, crop=SIZE, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
THRESHOLD = 100            # compress the toy's small weights too (coremltools' default skips < 2048 elements)

# the op that proves a precision really compressed something
EVIDENCE = {
    Precision.fp32: None,
    Precision.fp16: "cast",
    Precision.int8: "constexpr_affine_dequantize",
    Precision.palettize6: "constexpr_lut_to_dense",
    Precision.palettize4: "constexpr_lut_to_dense",
    Precision.int4: "constexpr_blockwise_shift_scale",
    Precision.w8a8: "quantize",
}


def spec_for(precision: Precision, **options) -> ExportSpec:
    options.setdefault("ios", 18 if precision is Precision.int4 else 17)
    options.setdefault("weight_threshold", THRESHOLD)
    return ExportSpec("toy", SIZE, precision, options=TARGET.options(**options))


def synthetic_calibration() -> Calibration:
    images = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return Calibration(batches=[images[:2], images[2:]], source="synthetic", samples=4)


def run(artifact, x: np.ndarray) -> np.ndarray:
    with TARGET.runner(artifact) as runner:
        return runner.infer(x)


@pytest.fixture(scope="module")
def toy():
    return toy_net()


@pytest.fixture(scope="module")
def converted(toy, tmp_path_factory):
    """fp32 and fp16 toy artifacts, converted once for the tests that only read or run them."""
    root = tmp_path_factory.mktemp("coreml")
    return {p: TARGET.convert(toy, spec_for(p), root / f"{p.value}.mlpackage") for p in (Precision.fp32, Precision.fp16)}


def test_registered_as_a_target():
    assert isinstance(TARGET, Target)
    assert get_target("coreml") is TARGET
    assert TARGET.unavailable_reason() is None
    assert TARGET.converters[0] == "trace"


# ---------------------------------------------------------------- the precision matrix

@pytest.mark.parametrize("precision", TARGET.precisions, ids=lambda p: f"toy-coreml-{p.value}")
def test_every_precision_converts_and_matches_pytorch(precision, toy, tmp_path):
    calibration = synthetic_calibration() if precision is Precision.w8a8 else None
    artifact = TARGET.convert(toy, spec_for(precision), tmp_path / f"toy{TARGET.suffix}", calibration)
    assert artifact.precision is precision and artifact.path.is_dir()
    if EVIDENCE[precision]:
        assert EVIDENCE[precision] in load_program(artifact.path).op_types
    x = toy_images(4)
    metrics = compare(reference(toy, x), run(artifact, x))
    assert tolerance_for(TARGET, precision).failures(metrics, trained=False) == []
    assert TARGET.load(artifact.path).precision is precision


class SharedZeros(torch.nn.Module):
    """A zero linear bias and a zero LayerNorm beta of the same size (>= 100, coremltools'
    deduplication threshold): after conversion they are one const feeding both ops, as in
    random-init Swin."""

    def __init__(self, dim: int = 128):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, dim, 4, 4)
        self.norm = torch.nn.LayerNorm(dim)
        self.fc = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, 10)
        torch.nn.init.zeros_(self.fc.bias)

    def forward(self, x):                                           # [B, 3, 8, 8]
        tokens = self.embed(x).flatten(2).transpose(1, 2)           # [B, 4, D]
        return self.head(self.fc(self.norm(tokens)).mean(1))        # [B, 10]


def test_only_conv_and_linear_weights_are_compressed(tmp_path):
    """Biases, norms and derived constants stay exact, and a const shared by a linear and a
    layer_norm does not break compression (a per-op-type config fails on it in coremltools 9.0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SharedZeros().eval()
    spec = ExportSpec("shared", 8, Precision.int8, options=TARGET.options(weight_threshold=0))
    artifact = TARGET.convert(model, spec, tmp_path / "shared.mlpackage")
    program = load_program(artifact.path)
    compressed = {out.name for op in program.ops if op.type.startswith("constexpr_") for out in op.outputs}
    uses = {(op.type, key) for op in program.ops for key, bindings in op.inputs.items()
            for b in bindings if b.name in compressed}
    assert uses == {("conv", "weight"), ("linear", "weight")}
    assert "3 of 3 conv/linear weight tensors compressed" in " ".join(artifact.notes)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    metrics = compare(reference(model, x), run(artifact, x))
    assert tolerance_for(TARGET, Precision.int8).failures(metrics, trained=False) == []


def test_nothing_to_compress_is_an_error(toy, tmp_path):
    with pytest.raises(ConversionError, match="nothing was compressed"):
        TARGET.convert(toy, spec_for(Precision.int8, weight_threshold=10**6), tmp_path / "toy.mlpackage")


def test_compressed_packages_are_smaller(toy, converted, tmp_path):
    palettized = TARGET.convert(toy, spec_for(Precision.palettize4), tmp_path / "p4.mlpackage")
    assert palettized.size_bytes < converted[Precision.fp16].size_bytes < converted[Precision.fp32].size_bytes


def test_same_model_gives_byte_identical_packages(toy, converted, tmp_path):
    again = TARGET.convert(toy, spec_for(Precision.fp16), tmp_path / "again.mlpackage")
    first = converted[Precision.fp16].path
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.path) for p in again.path.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (again.path / f).read_bytes() for f in files)


ANOTHER_PROCESS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from mobilevit_deploy.spec import ExportSpec, Precision
from mvdeploy_targets.coreml import TARGET
from toys import SIZE, toy_net
options = TARGET.options(ios=17, weight_threshold=int(sys.argv[3]))
TARGET.convert(toy_net(), ExportSpec("toy", SIZE, Precision.fp16, options=options), Path(sys.argv[1]))
"""


def test_same_model_gives_byte_identical_packages_in_another_process(converted, tmp_path):
    """protobuf (upb) writes map entries in an order seeded per process, and coremltools stamps the
    date: the package written by another process must still be the same bytes, file for file."""
    import subprocess
    from pathlib import Path

    other = tmp_path / "other.mlpackage"
    made = subprocess.run([sys.executable, "-c", ANOTHER_PROCESS, str(other), str(Path(__file__).parent),
                           str(THRESHOLD)], capture_output=True, text=True, timeout=600)   # = spec_for(fp16)
    assert made.returncode == 0, made.stderr[-3000:]
    first = converted[Precision.fp16].path
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    assert [f for f in files if (first / f).read_bytes() != (other / f).read_bytes()] == []


def test_export_converter_matches_pytorch(toy, tmp_path):
    spec = ExportSpec("toy", SIZE, Precision.fp32, converter="export", options=TARGET.options(ios=18))
    artifact = TARGET.convert(toy, spec, tmp_path / "toy.mlpackage")
    x = toy_images(2)
    metrics = compare(reference(toy, x), run(artifact, x))
    assert tolerance_for(TARGET, Precision.fp32).failures(metrics, trained=False) == []
    assert artifact.converter == "export"


# ---------------------------------------------------------------- what convert refuses, clearly

def test_int4_below_ios18_is_a_clear_error(toy, tmp_path):
    with pytest.raises(ConversionError, match=r"int4 needs --ios 18.*--ios 17"):
        TARGET.convert(toy, spec_for(Precision.int4, ios=17), tmp_path / "toy.mlpackage")
    assert not (tmp_path / "toy.mlpackage").exists()


def test_w8a8_needs_calibration_and_ios17(toy, tmp_path):
    with pytest.raises(CalibrationRequiredError):
        TARGET.convert(toy, spec_for(Precision.w8a8), tmp_path / "a.mlpackage")
    with pytest.raises(ConversionError, match="--ios 17"):
        TARGET.convert(toy, spec_for(Precision.w8a8, ios=16), tmp_path / "b.mlpackage", synthetic_calibration())


@pytest.mark.parametrize("spec, error, message", [
    (ExportSpec("toy", SIZE, options={"ios": 15}), OptionsError, "ios 15"),
    (ExportSpec("toy", SIZE, options={"image_inputs": True}), OptionsError, "did you mean 'image_input'"),
    (ExportSpec("toy", SIZE, options={"image_input": True}), OptionsError, "preprocess"),
    (ExportSpec("toy", SIZE, layout=Layout.nhwc), ConversionError, "nchw"),
    (ExportSpec("toy", SIZE, int8_io=True), ConversionError, "int8 model I/O"),
    (ExportSpec("toy", SIZE, converter="onnx2coreml"), UnknownNameError, "known: export, trace"),
    (ExportSpec("toy", SIZE, Precision.int8_dynamic), UnknownNameError, "precision for target coreml"),
], ids=["ios15", "misspelt-option", "image-without-preprocess", "nhwc", "int8-io", "converter", "precision"])
def test_bad_requests_fail_before_converting(spec, error, message, toy, tmp_path):
    with pytest.raises(error, match=message):
        TARGET.convert(toy, spec, tmp_path / "toy.mlpackage")


# ---------------------------------------------------------------- metadata, labels, image input

def test_metadata_round_trip(toy, tmp_path):
    metadata = {
        "author": "mvdeploy tests", "license": "Apache-2.0", "version": "1.2.3",
        "short_description": "toy classifier", "weights_source": "random init (seed 0)",
        "preprocessing": IMAGENET.to_dict(),
    }
    artifact = TARGET.convert(toy, spec_for(Precision.fp16, metadata=metadata), tmp_path / "toy.mlpackage")
    saved = load_proto(artifact.path).description.metadata
    assert (saved.author, saved.license, saved.versionString, saved.shortDescription) == (
        "mvdeploy tests", "Apache-2.0", "1.2.3", "toy classifier")
    user = dict(saved.userDefined)
    assert user["weights_source"] == "random init (seed 0)"
    assert json.loads(user["preprocessing"])["std"] == [0.229, 0.224, 0.225]
    assert user["mvdeploy.model"] == "toy" and user["mvdeploy.precision"] == "fp16"
    assert user["mvdeploy.toolkit_version"]
    assert "com.github.apple.coremltools.version" in user


def test_classifier_with_labels(toy, tmp_path):
    labels = [f"class_{i}" for i in range(10)]
    artifact = TARGET.convert(toy, spec_for(Precision.fp32, labels=labels), tmp_path / "toy.mlpackage")
    description = load_proto(artifact.path).description
    assert description.predictedFeatureName == "classLabel"
    assert [o.name for o in artifact.outputs][0] == "logits"
    x = toy_images(2)
    ref = reference(toy, x)
    metrics = compare(ref, run(artifact, x))                        # the runner returns the logits
    assert tolerance_for(TARGET, Precision.fp32).failures(metrics, trained=False) == []
    outputs = Interpreter.from_package(artifact.path).run({"image": x[:1]})
    probabilities = outputs[description.predictedProbabilitiesName]
    expected = torch.softmax(torch.from_numpy(ref[0]), -1).numpy()
    np.testing.assert_allclose([probabilities[label] for label in labels], expected, atol=1e-6)
    assert outputs["classLabel"] == labels[int(np.argmax(ref[0]))]


def test_classifier_without_logits_returns_probabilities_in_label_order(toy, tmp_path):
    """A classifier mvdeploy did not make (no float output): the runner reads the probability dict."""
    labels = [f"c{i}" for i in range(10)]
    wrapped = torch.nn.Sequential(toy, torch.nn.Softmax(dim=-1)).eval()
    example = torch.zeros(1, 3, SIZE, SIZE)
    mlmodel = ct.convert(torch.jit.trace(wrapped, example), convert_to="mlprogram",
                         inputs=[ct.TensorType(name="x", shape=example.shape, dtype=np.float32)],
                         classifier_config=ct.ClassifierConfig(labels), minimum_deployment_target=ct.target.iOS17,
                         compute_precision=ct.precision.FLOAT32)
    mlmodel.save(str(tmp_path / "foreign.mlpackage"))
    artifact = TARGET.load(tmp_path / "foreign.mlpackage")
    assert artifact.outputs[0].shape == (1, 10)
    x = toy_images(1)
    expected = torch.softmax(torch.from_numpy(reference(toy, x)), -1).numpy()
    np.testing.assert_allclose(run(artifact, x), expected, atol=1e-6)


@pytest.mark.parametrize("precision", [Precision.fp32, Precision.fp16], ids=lambda p: f"toy-coreml-image-{p.value}")
def test_image_input_runs_and_matches(precision, toy, tmp_path):
    labels = [f"class_{i}" for i in range(10)]
    spec = spec_for(precision, image_input=True, preprocess=IMAGENET, labels=labels)
    artifact = TARGET.convert(toy, spec, tmp_path / "toy.mlpackage")
    assert load_proto(artifact.path).description.input[0].type.WhichOneof("Type") == "imageType"
    assert artifact.inputs[0].dtype == "uint8" and artifact.inputs[0].shape == (1, 3, SIZE, SIZE)
    x = toy_images(2)                                               # canonical, normalized
    metrics = compare(reference(toy, x), run(artifact, x))
    assert tolerance_for(TARGET, precision).failures(metrics, trained=False) == []


# ---------------------------------------------------------------- load and runner

def test_load_describes_a_foreign_package(toy, tmp_path):
    convert(toy, tmp_path / "foreign.mlpackage", ios=17, fp16=True)
    artifact = TARGET.load(tmp_path / "foreign.mlpackage")
    assert artifact.precision is Precision.fp16
    assert artifact.inputs[0].name == "image" and artifact.inputs[0].shape == (1, 3, SIZE, SIZE)
    assert artifact.outputs[0].name == "logits" and artifact.outputs[0].shape == (1, 10)
    assert artifact.converter == ""


def test_runner_says_what_ran(converted):
    runner = TARGET.runner(converted[Precision.fp16])
    assert isinstance(runner, CoreMLRunner)
    with runner:
        runner.infer(toy_images(1))
        engine = runner.engine
    expected = "Core ML runtime" if sys.platform == "darwin" else "not Apple's CPU/GPU/Neural Engine kernels"
    assert expected in engine


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS has the real runtime")
def test_apple_runtime_off_macos_is_a_clear_error(converted):
    with pytest.raises(TargetUnavailableError, match="macOS"):
        with CoreMLRunner(converted[Precision.fp32], use_apple_runtime=True):
            pass


def test_runner_validates_the_feed(converted):
    from mobilevit_deploy.errors import ArtifactError

    with TARGET.runner(converted[Precision.fp32]) as runner, pytest.raises(ArtifactError, match="does not match"):
        runner.infer(np.zeros((1, 3, SIZE + 1, SIZE + 1), np.float32))


# ---------------------------------------------------------------- the real models (slow)

@pytest.mark.slow
@pytest.mark.parametrize("precision", [Precision.fp32, Precision.fp16, Precision.int8, Precision.palettize6,
                                       Precision.int4, Precision.w8a8], ids=lambda p: p.value)
@pytest.mark.parametrize("name", ["mobilevit_xxs", "swin_micro"])
def test_real_models_pass_parity(name, precision, tmp_path):
    """Through the pipeline (fusion, conversion, parity report) with the shipped reference weights."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.calibration import calibration_for

    prepared = pipeline.prepare_model(name, image_size=64)
    calibration = calibration_for(prepared, None, samples=32) if precision is Precision.w8a8 else None
    options = TARGET.options(ios=18 if precision is Precision.int4 else 17)
    result = pipeline.convert(prepared, "coreml", prepared.spec(precision, options=options), tmp_path,
                              calibration=calibration)
    assert result.report.passed, result.report.failures
