"""The ExecuTorch target: a toy at each precision, the .pte reader, a worker crash reported by signal,
a negated head as the negative control, a corrupt file and another model's file as one line through
the CLI, and int8 accuracy of the reference models on the digits test split. The fp32/int8 parity of
both reference models runs in test_matrix.py."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

for _module in ("executorch", "torchao"):
    pytest.importorskip(_module, reason=f"{_module} cannot be imported; the executorch target needs it")

from mobilevit_deploy.errors import (ArtifactError, CalibrationRequiredError, ConversionError,  # noqa: E402
                                     RunnerStateError)
from mobilevit_deploy.formats.pte import precision_of, read_pte  # noqa: E402
from mobilevit_deploy.parity import compare, tolerance_for  # noqa: E402
from mobilevit_deploy.spec import Calibration, ExportSpec, Layout, Precision  # noqa: E402
from mobilevit_deploy.targets import Target, get_target  # noqa: E402
from mvdeploy_targets.executorch import TARGET  # noqa: E402

SIZE = 64


class Toy(nn.Module):
    """Conv+SiLU stem, then LayerNorm + 2-head attention (4-D matmul, unbind) + GELU MLP, like the real models."""

    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.SiLU(), nn.Conv2d(16, dim, 3, 2, 1), nn.SiLU())
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                     # [B, 3, H, W]
        x = self.stem(x).flatten(2).transpose(1, 2)                          # [B, N, D]
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                       # 3 x [B, h, N, D/h]
        attn = ((q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))                                          # [B, K]


def make_toy(num_classes: int = 10) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Toy(num_classes).eval()


@pytest.fixture(scope="module")
def toy() -> nn.Module:
    return make_toy()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).numpy()


@pytest.fixture(scope="module")
def reference(toy, images) -> np.ndarray:
    with torch.no_grad():
        return toy(torch.from_numpy(images)).numpy()


def calibration() -> Calibration:
    images = torch.randn(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return Calibration(batches=[images[:8], images[8:]], source="synthetic", samples=16)


@pytest.fixture(scope="module")
def converted(toy, tmp_path_factory):
    """converted(precision) -> Artifact of the toy, each made once per module."""
    cache, folder = {}, tmp_path_factory.mktemp("pte")

    def get(precision: Precision):
        if precision not in cache:
            path = folder / f"toy-{precision.value}.pte"
            cache[precision] = TARGET.convert(toy, ExportSpec("toy", SIZE, precision), path, calibration())
        return cache[precision]

    return get


def run(artifact, images: np.ndarray) -> np.ndarray:
    with TARGET.runner(artifact) as runner:
        return runner.infer(images)


# ------------------------------------------------------------------------------------ the toy at each precision


def test_registered_as_a_target():
    assert get_target("executorch") is TARGET
    assert isinstance(TARGET, Target)
    assert TARGET.unavailable_reason() is None
    assert TARGET.suffix == ".pte" and TARGET.calibrated == (Precision.int8,)


@pytest.mark.parametrize("precision", TARGET.precisions, ids=lambda p: f"toy-executorch-{p.value}")
def test_toy_parity(precision, converted, images, reference):
    artifact = converted(precision)
    facts = read_pte(artifact.path)
    assert artifact.inputs[0].shape == (1, 3, SIZE, SIZE) and artifact.inputs[0].dtype == "float32"
    assert artifact.outputs[0].shape == (1, 10) and artifact.outputs[0].dtype == "float32"
    assert precision_of(facts) is precision and TARGET.load(artifact.path).precision is precision
    # the rewrites keep attention inside XNNPACK: only LayerNorm and the token mean stay outside
    assert facts.delegates["XnnpackBackend"] >= 1 and facts.delegated_nodes > 10, facts
    assert set(facts.kernels) <= {"aten::native_layer_norm", "aten::mean", "aten::gelu",
                                  "quantized_decomposed::quantize_per_tensor",
                                  "quantized_decomposed::dequantize_per_tensor"}, facts.kernels
    assert any("delegate calls" in note for note in artifact.notes)
    metrics = compare(reference, run(artifact, images))
    assert tolerance_for(TARGET, precision).failures(metrics, trained=False) == [], metrics
    if precision is Precision.fp32:
        assert metrics.max_rel < 5e-6, metrics


def test_int8_without_calibration_says_how_to_calibrate(toy, tmp_path):
    with pytest.raises(CalibrationRequiredError, match="--calib-data DIR.*--calib-data synthetic"):
        TARGET.convert(toy, ExportSpec("toy", SIZE, Precision.int8), tmp_path / "x.pte")
    assert not (tmp_path / "x.pte").exists()


def test_refused_requests(toy, tmp_path):
    with pytest.raises(ConversionError, match="nchw"):
        TARGET.convert(toy, ExportSpec("toy", SIZE, Precision.fp32, Layout.nhwc), tmp_path / "x.pte")
    with pytest.raises(ConversionError, match="int8 model I/O is not supported"):
        TARGET.convert(toy, ExportSpec("toy", SIZE, Precision.int8, int8_io=True), tmp_path / "x.pte", calibration())
    assert not (tmp_path / "x.pte").exists()


def test_runner_is_used_in_a_with_block(converted, images):
    runner = TARGET.runner(converted(Precision.fp32))
    with pytest.raises(RunnerStateError, match="with"):
        runner.infer(images[:1])


def test_threads_and_timing(converted, images):
    with TARGET.runner(converted(Precision.fp32), num_threads=1) as runner:
        assert "1 threads" in runner.engine and "executorch" in runner.engine
        times = runner.time_inference(images[:1], repeats=3, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)


# ------------------------------------------------------------------------------------ failures are failures


def test_negated_head_fails_parity(converted, images):
    """Negative control: the check sees the file's weights, not the model's. The toy's file against the toy
    with its head negated (what a file written from other weights is measured as) fails."""
    negated = make_toy()
    with torch.no_grad():
        negated.head.weight.neg_()
        negated.head.bias.neg_()
        expected = negated(torch.from_numpy(images)).numpy()
    metrics = compare(expected, run(converted(Precision.fp32), images))
    failures = tolerance_for(TARGET, Precision.fp32).failures(metrics, trained=False)
    assert metrics.max_rel > 0.1 and failures, metrics


def test_worker_crash_is_an_error_naming_the_signal(converted, images):
    with TARGET.runner(converted(Precision.fp32)) as runner:
        runner.infer(images[:1])
        os.kill(runner._proc.pid, signal.SIGABRT)                      # as a native crash would
        runner._proc.wait(timeout=30)
        with pytest.raises(ArtifactError, match="crashed with SIGABRT"):
            runner.infer(images[:1])
        with pytest.raises(ArtifactError, match="not running .*SIGABRT"):
            runner.infer(images[:1])


def test_worker_crash_is_a_failed_check(converted, monkeypatch, tmp_path):
    """Through pipeline.check_artifact: the crash becomes a failure line of the report, not an exception."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.models import model_config
    from mobilevit_deploy.runners.executorch import ExecuTorchRunner

    original = ExecuTorchRunner._infer

    def crash(self, x):
        os.kill(self._proc.pid, signal.SIGSEGV)
        self._proc.wait(timeout=30)
        return original(self, x)

    monkeypatch.setattr(ExecuTorchRunner, "_infer", crash)
    preprocess = model_config("mobilevit_xxs").preprocess.with_size(SIZE)
    prepared = pipeline.PreparedModel("toy", make_toy(), SIZE, 10, preprocess, "random")
    inputs = pipeline.parity_inputs(prepared, synthetic=2, real=0)
    report = pipeline.check_artifact(converted(Precision.fp32), TARGET, prepared, inputs)
    assert not report.passed and any("crashed with SIGSEGV" in f for f in report.failures), report.failures


def test_corrupt_and_truncated_files_are_artifact_errors(converted, tmp_path):
    junk = tmp_path / "junk.pte"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not an ExecuTorch program"):
        TARGET.load(junk)
    data = converted(Precision.fp32).path.read_bytes()
    truncated = tmp_path / "truncated.pte"
    truncated.write_bytes(data[:len(data) // 3])
    with pytest.raises(ArtifactError, match="truncated.pte"):
        TARGET.load(truncated)


def _one_line(result, *needles):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_corrupt_pte_is_one_line(cli, tmp_path):
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"PK\x03\x04 not a program at all" * 4)
    _one_line(cli("check", bad, "--model", "mobilevit_xxs"), "not an ExecuTorch program")


def test_another_models_pte_is_one_line(cli, converted, tmp_path):
    """The 10-class toy checked as a 7-class mobilevit_xxs: a shape mismatch, one line."""
    path = tmp_path / "toy.pte"
    path.write_bytes(converted(Precision.fp32).path.read_bytes())
    _one_line(cli("check", path, "--model", "mobilevit_xxs", "--num-classes", "7"), "10 outputs", "--num-classes 10")


def test_another_models_pte_fails_parity(cli, converted, tmp_path):
    """The 10-class toy checked as mobilevit_xxs: the shapes fit, parity fails with one line per bound."""
    path = tmp_path / "toy.pte"
    path.write_bytes(converted(Precision.fp32).path.read_bytes())
    result = cli("check", path, "--model", "mobilevit_xxs")
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "max_rel" in result.stderr and (tmp_path / "toy.pte.parity.json").exists()


# ------------------------------------------------------------------------------------ the reference models


# slow: the int8 conversion of a real model takes minutes on a loaded machine; test_matrix.py runs both
# reference models at int8 by default (parity, top-1 agreement).
@pytest.mark.parametrize("name", [
    pytest.param("mobilevit_xxs", id="mobilevit_xxs-executorch-int8-accuracy", marks=pytest.mark.slow),
    pytest.param("swin_micro", id="swin_micro-executorch-int8-accuracy", marks=pytest.mark.slow),
])
def test_int8_accuracy_on_digits(name, tmp_path):
    """int8 top-1 accuracy on 200 held-out digits within 1 point of PyTorch fp32 (calibrated on the train split)."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.calibration import calibration_for

    prepared = pipeline.prepare_model(name, image_size=SIZE)
    test = prepared.reference.read("test", prepared.preprocess, 200)
    result = pipeline.convert(prepared, TARGET, prepared.spec(Precision.int8), tmp_path,
                              calibration=calibration_for(prepared, None, samples=64), check=False)
    with torch.no_grad():
        expected = prepared.model(test.images).argmax(1).numpy()
    got = run(result.artifact, test.images.numpy()).argmax(1)
    labels = np.asarray(test.labels)
    torch_accuracy, int8_accuracy = (expected == labels).mean(), (got == labels).mean()
    assert int8_accuracy >= torch_accuracy - 0.01, (torch_accuracy, int8_accuracy)
