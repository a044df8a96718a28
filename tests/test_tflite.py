"""The TFLite target: both converters at each precision on a toy, the LiteRT runner's layout and
integer I/O, a worker crash reported by signal, Flex ops refused by name, and a tampered file as the
negative control. The real models run under `-m slow`."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

for _module in ("ai_edge_litert", "litert_torch", "torchao"):
    pytest.importorskip(_module, reason=f"{_module} cannot be imported; the tflite target needs it")

from mobilevit_deploy.errors import (ArtifactError, CalibrationRequiredError, ConversionError,  # noqa: E402
                                     OptionsError, RunnerStateError)
from mobilevit_deploy.formats.tflite import float_io, nchw_input, read_tflite  # noqa: E402
from mobilevit_deploy.parity import compare, tolerance_for  # noqa: E402
from mobilevit_deploy.runners.litert import LiteRTRunner  # noqa: E402
from mobilevit_deploy.spec import Calibration, ExportSpec, Layout, Precision  # noqa: E402
from mobilevit_deploy.targets import Target, get_target  # noqa: E402
from mvdeploy_targets.tflite import TARGET, litert_torch as litert_torch_backend  # noqa: E402

SIZE = 64
HAS_ONNX2TF = all(importlib.util.find_spec(m) for m in ("onnx2tf", "tensorflow", "onnx"))
needs_onnx2tf = pytest.mark.skipif(not HAS_ONNX2TF, reason="onnx2tf, tensorflow or onnx cannot be imported")

# What the file itself must show for each precision (tensor types read from the flatbuffer).
EVIDENCE = {
    Precision.fp32: lambda f: f.weight_types <= {"FLOAT32", "INT32"} and "INT8" not in f.activation_types,
    Precision.fp16: lambda f: "FLOAT16" in f.weight_types,
    Precision.int8: lambda f: "INT8" in f.activation_types and "INT8" in f.weight_types,
    Precision.int8_dynamic: lambda f: "INT8" in f.weight_types and "INT8" not in f.activation_types,
}
EVIDENCE[Precision.int8_static] = EVIDENCE[Precision.int8]
# What the graph alone says: both static int8 recipes make an int8 graph; the name (or the parity record)
# beside an int8 graph says which recipe (formats/tflite.py precision_of).
READ_BACK = {Precision.int8_static: Precision.int8}


# ------------------------------------------------------------------------------------ the toy


class ToyBlock(nn.Module):
    """LayerNorm + two-head attention + exact-GELU MLP: the transformer ops the real models use."""

    def __init__(self, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                     # [B, N, D]
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                                 # [B, heads, N, D/heads] each
        attn = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Toy(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU(),
            nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU(),
        )
        self.block = ToyBlock(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                     # [B, 3, H, W]
        x = self.stem(x)                                                     # [B, 32, H/4, W/4]
        x = self.block(x.flatten(2).transpose(1, 2))                         # [B, N, 32]
        return self.head(x.mean(1))                                          # [B, K]


@pytest.fixture(scope="module")
def toy() -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Toy()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):       # non-trivial BN statistics
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 1.5 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).numpy()


@pytest.fixture(scope="module")
def reference(toy, images) -> np.ndarray:
    with torch.no_grad():
        return toy(torch.from_numpy(images)).numpy()


def calibration() -> Calibration:
    images = torch.randn(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return Calibration(batches=[images[:16], images[16:]], source="synthetic", samples=32)


@pytest.fixture(scope="module")
def converted(toy, tmp_path_factory):
    """converted(converter, precision, layout, int8_io) -> Artifact, each made once per module."""
    cache, folder = {}, tmp_path_factory.mktemp("tflite")

    def get(converter: str, precision: Precision, layout: Layout = Layout.nchw, int8_io: bool = False):
        key = (converter, precision, layout, int8_io)
        if key not in cache:
            spec = ExportSpec("toy", SIZE, precision, layout, int8_io, converter)
            path = folder / f"toy-{converter}-{precision.value}-{layout.value}{'-int8io' if int8_io else ''}.tflite"
            cache[key] = TARGET.convert(toy, spec, path, calibration())
        return cache[key]

    return get


def run(artifact, images: np.ndarray) -> np.ndarray:
    with TARGET.runner(artifact) as runner:
        return runner.infer(images)


def assert_parity(artifact, precision: Precision, images, reference) -> None:
    metrics = compare(reference, run(artifact, images))
    assert tolerance_for(TARGET, precision).failures(metrics, trained=False) == [], metrics
    if precision is Precision.fp32:
        assert metrics.max_rel < 1e-5, metrics
    elif precision is Precision.fp16:
        assert metrics.max_rel < 5e-3, metrics
    else:
        assert metrics.cosine_min >= 0.99, metrics


# ------------------------------------------------------------------------------------ the matrix


def test_registered_as_a_target():
    assert get_target("tflite") is TARGET
    assert isinstance(TARGET, Target)
    assert TARGET.unavailable_reason() is None
    assert TARGET.converters[0] == "litert-torch"


@pytest.mark.parametrize("precision", TARGET.precisions, ids=lambda p: f"toy-tflite-{p.value}")
def test_litert_torch_parity(precision, converted, images, reference, tmp_path):
    artifact = converted("litert-torch", precision)
    facts = read_tflite(artifact.path)
    assert EVIDENCE[precision](facts), facts
    assert artifact.inputs[0].shape == (1, 3, SIZE, SIZE) and artifact.inputs[0].dtype == "float32"
    assert artifact.outputs[0].dtype == "float32"
    assert TARGET.load(artifact.path).precision is precision                        # the graph and its name
    anonymous = Path(shutil.copy2(artifact.path, tmp_path / "anonymous.tflite"))
    assert TARGET.load(anonymous).precision is READ_BACK.get(precision, precision)    # the graph alone
    assert_parity(artifact, precision, images, reference)


ONNX2TF_CASES = [
    pytest.param(Precision.fp32, id="toy-tflite-fp32-onnx2tf"),
    pytest.param(Precision.fp16, id="toy-tflite-fp16-onnx2tf"),
    pytest.param(Precision.int8, id="toy-tflite-int8-onnx2tf"),
    pytest.param(Precision.int8_dynamic, id="toy-tflite-int8-dynamic-onnx2tf", marks=pytest.mark.slow),
]


@needs_onnx2tf
@pytest.mark.parametrize("precision", ONNX2TF_CASES)
def test_onnx2tf_parity(precision, converted, images, reference):
    artifact = converted("onnx2tf", precision)
    facts = read_tflite(artifact.path)
    assert EVIDENCE[precision](facts), facts
    assert artifact.inputs[0].shape == (1, 3, SIZE, SIZE)         # NCHW asked for: a TRANSPOSE in front
    assert TARGET.load(artifact.path).precision is precision
    assert_parity(artifact, precision, images, reference)


# ------------------------------------------------------------------------------------ layout and integer I/O


def test_nhwc_input_matches(converted, images, reference, tmp_path):
    artifact = converted("litert-torch", Precision.fp32, Layout.nhwc)
    assert artifact.inputs[0].shape == (1, SIZE, SIZE, 3) and artifact.inputs[0].layout is Layout.nhwc
    with TARGET.runner(artifact) as runner:
        assert runner.input_shape == (1, 3, SIZE, SIZE)                # the feed stays canonical NCHW
        metrics = compare(reference, runner.infer(images))
    assert metrics.max_rel < 1e-5, metrics

    # the rewrite onnx2tf files get for an NCHW spec: a TRANSPOSE in front of the NHWC input
    nchw = tmp_path / "nchw.tflite"
    nchw.write_bytes(nchw_input(artifact.path.read_bytes()))
    rewritten = TARGET.load(nchw)
    assert rewritten.inputs[0].shape == (1, 3, SIZE, SIZE) and rewritten.inputs[0].layout is Layout.nchw
    assert compare(reference, run(rewritten, images)).max_rel < 1e-5


def test_intermediate_tensors_can_be_read(converted, images):
    with LiteRTRunner(converted("litert-torch", Precision.fp32), preserve_all_tensors=True) as runner:
        runner.infer(images[:1])
        details = runner.tensor_details()
        inner = [d for d in details if len(d["shape"]) == 4 and d["dtype"] == "float32"]
        assert inner, details
        assert runner.tensor(inner[-1]["index"]).shape == tuple(inner[-1]["shape"])


def test_int8_io_round_trip(converted, images, reference, tmp_path):
    artifact = converted("litert-torch", Precision.int8, Layout.nhwc, int8_io=True)
    inp, out = artifact.inputs[0], artifact.outputs[0]
    assert (inp.shape, inp.dtype, out.dtype) == ((1, SIZE, SIZE, 3), "int8", "int8")
    assert inp.scale > 0 and out.scale > 0 and inp.zero_point is not None
    with TARGET.runner(artifact) as runner:
        assert runner.inputs[0]["scale"] == pytest.approx(inp.scale)   # the file and the interpreter agree
        integer_io = runner.infer(images)
    assert compare(reference, integer_io).cosine_min >= 0.99

    # the same graph with float I/O added by the rewrite computes the same numbers
    floated = tmp_path / "float-io.tflite"
    floated.write_bytes(float_io(artifact.path.read_bytes()))
    float_artifact = TARGET.load(floated)
    assert (float_artifact.inputs[0].dtype, float_artifact.outputs[0].dtype) == ("float32", "float32")
    np.testing.assert_allclose(run(float_artifact, images), integer_io, atol=1e-6)


def test_int8_io_needs_int8(toy, tmp_path):
    spec = ExportSpec("toy", SIZE, Precision.fp32, int8_io=True)
    with pytest.raises(ConversionError, match="int8 I/O needs int8"):
        TARGET.convert(toy, spec, tmp_path / "x.tflite")


@pytest.mark.parametrize("converter", TARGET.converters)
def test_int8_without_calibration_says_how_to_calibrate(converter, toy, tmp_path):
    spec = ExportSpec("toy", SIZE, Precision.int8, converter=converter)
    with pytest.raises(CalibrationRequiredError, match="--calib-data DIR.*--calib-data synthetic"):
        TARGET.convert(toy, spec, tmp_path / "x.tflite")
    assert not (tmp_path / "x.tflite").exists()


def test_foreign_options_are_refused(toy, tmp_path):
    spec = ExportSpec("toy", SIZE, Precision.fp32, options={"ios": 16})
    with pytest.raises(OptionsError, match="no option 'ios'"):
        TARGET.convert(toy, spec, tmp_path / "x.tflite")
    assert not (tmp_path / "x.tflite").exists()


def test_runner_is_used_in_a_with_block(converted, images):
    runner = TARGET.runner(converted("litert-torch", Precision.fp32))
    with pytest.raises(RunnerStateError, match="with"):
        runner.infer(images[:1])


# ------------------------------------------------------------------------------------ failures are errors


def test_tampered_weights_change_outputs(converted, toy, images, reference, tmp_path):
    """Negative control: the check sees the file's weights, not the model's."""
    artifact = converted("litert-torch", Precision.fp32)
    data = bytearray(artifact.path.read_bytes())
    weight = toy.head.weight.detach().numpy().astype(np.float32).tobytes()
    at = data.find(weight)
    assert at >= 0, "the head's float32 weights are not stored verbatim in the file"
    data[at:at + len(weight)] = (-np.frombuffer(weight, np.float32)).tobytes()
    tampered = tmp_path / "tampered.tflite"
    tampered.write_bytes(bytes(data))

    metrics = compare(reference, run(TARGET.load(tampered), images))
    failures = tolerance_for(TARGET, Precision.fp32).failures(metrics, trained=False)
    assert metrics.max_rel > 0.1 and failures, metrics


def test_worker_crash_is_an_error_naming_the_signal(converted, images):
    with TARGET.runner(converted("litert-torch", Precision.fp32)) as runner:
        runner.infer(images[:1])
        os.kill(runner._proc.pid, signal.SIGABRT)                      # as a native crash would
        runner._proc.wait(timeout=30)
        with pytest.raises(ArtifactError, match="crashed with SIGABRT"):
            runner.infer(images[:1])
        with pytest.raises(ArtifactError, match="not running .*SIGABRT"):
            runner.infer(images[:1])


def test_broken_dynamic_file_is_refused(toy, tmp_path, monkeypatch):
    """An int8-dynamic conversion whose file outputs zeros is a ConversionError, and no file is left."""
    def zero_outputs(module, example, calibration, nhwc, keep_float):
        import litert_torch
        return litert_torch.convert(Scaled(module, 0.0), example), []

    monkeypatch.setitem(litert_torch_backend.RECIPES, Precision.int8_dynamic, zero_outputs)
    out = tmp_path / "zeros.tflite"
    with pytest.raises(ConversionError, match="all-zero outputs"):
        TARGET.convert(toy, ExportSpec("toy", SIZE, Precision.int8_dynamic), out)
    assert not out.exists()


class Scaled(nn.Module):
    def __init__(self, model: nn.Module, factor: float):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


FLEX_MODEL = textwrap.dedent("""
    import sys
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def f(x):
        return tf.reduce_mean(tf.math.erf(x), axis=[1, 2])         # no builtin ERF: becomes FlexErf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    open(sys.argv[1], "wb").write(converter.convert())
""")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="tensorflow cannot be imported (needed to build a Flex model)")
def test_flex_ops_are_refused_by_name(tmp_path):
    path = tmp_path / "flex.tflite"
    done = subprocess.run([sys.executable, "-c", FLEX_MODEL, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = read_tflite(path)
    assert "FlexErf" in facts.custom_ops

    with pytest.raises(ArtifactError, match="Flex.*FlexErf"):
        TARGET.load(path)
    from mobilevit_deploy.spec import Artifact
    artifact = Artifact(path, "tflite", Precision.fp32, facts.inputs, facts.outputs)
    with pytest.raises(ArtifactError, match="FlexErf"):
        with LiteRTRunner(artifact):
            pass


def test_not_a_tflite_file_is_an_artifact_error(tmp_path):
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not a TFLite flatbuffer"):
        TARGET.load(path)


# ------------------------------------------------------------------------------------ the real models (slow)


REAL_CASES = [
    pytest.param("mobilevit_xxs", "litert-torch", Precision.fp32, id="mobilevit_xxs-tflite-fp32"),
    pytest.param("mobilevit_xxs", "litert-torch", Precision.int8, id="mobilevit_xxs-tflite-int8"),
    pytest.param("swin_micro", "litert-torch", Precision.fp32, id="swin_micro-tflite-fp32"),
    pytest.param("swin_micro", "litert-torch", Precision.int8, id="swin_micro-tflite-int8"),
    pytest.param("swin_micro", "onnx2tf", Precision.fp32, id="swin_micro-tflite-fp32-onnx2tf"),
    pytest.param("swin_micro", "onnx2tf", Precision.int8, id="swin_micro-tflite-int8-onnx2tf",
                 marks=pytest.mark.xfail(reason="onnx2tf's full int8 (LayerNorm, softmax, GELU in int8 too) "
                                                "reaches cosine_min ~0.96 < 0.98 on one input; top-1 agrees")),
    pytest.param("mobilevit_xxs", "onnx2tf", Precision.fp32, id="mobilevit_xxs-tflite-fp32-onnx2tf",
                 marks=pytest.mark.xfail(reason="onnx2tf 1.29 mis-transposes the MobileViT block on 4x4 maps "
                                                "(2x2 patches, equal dims) at 64x64; the parity check catches it")),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, converter, precision", REAL_CASES)
def test_real_models(name, converter, precision, tmp_path):
    """The reference (digits) weights at 64x64, int8 calibrated on the digits train split."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.calibration import calibration_for

    if converter == "onnx2tf" and not HAS_ONNX2TF:
        pytest.skip("onnx2tf, tensorflow or onnx cannot be imported")
    prepared = pipeline.prepare_model(name, image_size=SIZE)
    # None: the reference checkpoint's own train split (the digits)
    calibration = calibration_for(prepared, None, samples=64) if TARGET.needs_calibration(precision) else None
    spec = prepared.spec(precision, converter=converter)
    result = pipeline.convert(prepared, TARGET, spec, tmp_path, calibration=calibration)
    assert result.report.passed, result.report.failures
