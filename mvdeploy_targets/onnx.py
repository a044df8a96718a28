"""ONNX target: torch.onnx.export (TorchScript exporter, opset 17+), run by onnxruntime."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from mobilevit_deploy.debug.capture import OnnxCapture
from mobilevit_deploy.errors import ConversionError, first_line
from mobilevit_deploy.formats.onnx import read_io, stored_tensors
from mobilevit_deploy.parity.audit import StoredTensor
from mobilevit_deploy.parity.tolerances import FP32
from mobilevit_deploy.runners.base import Runner
from mobilevit_deploy.runners.onnxruntime import OnnxRuntimeRunner
from mobilevit_deploy.spec import Artifact, Calibration, ExportSpec, Layout, Precision
from mobilevit_deploy.targets import BaseTarget

OPSET = 17


class OnnxTarget(BaseTarget):
    name = "onnx"
    suffix = ".onnx"
    precisions = (Precision.fp32,)
    converters = ("torch.onnx",)
    tolerances = {Precision.fp32: FP32}
    requires = ("onnx", "onnxruntime")
    intermediates = OnnxCapture
    arm64_unsupported = "onnxruntime's aarch64 build is not part of the ARM64 engine (phones run .tflite or .pte files)"

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        spec = self.validated(spec, calibration)
        model = model.eval()
        if spec.layout is Layout.nhwc:
            model = NhwcInput(model)
        example = torch.zeros(spec.input_shape)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # tracer and deprecation chatter; failures still raise
                torch.onnx.export(model, (example,), str(out_path), dynamo=False, opset_version=OPSET,
                                  input_names=["image"], output_names=["logits"])
        except Exception as e:
            raise ConversionError(f"ONNX export failed: {type(e).__name__}: {first_line(e)}") from None
        return self.load(out_path, precision=spec.precision)

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        inputs, outputs = read_io(Path(path))
        return Artifact(Path(path), self.name, precision or Precision.fp32, inputs, outputs, converter="torch.onnx")

    def stored_tensors(self, artifact: Artifact) -> list[StoredTensor]:
        return stored_tensors(artifact.path)

    def runner(self, artifact: Artifact, **engine_options) -> Runner:
        return OnnxRuntimeRunner(artifact, **engine_options)


class NhwcInput(nn.Module):
    """Takes [B, H, W, 3] and feeds the wrapped NCHW model: apps usually hand over NHWC pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # [B, H, W, 3]
        return self.model(x.permute(0, 3, 1, 2))           # [B, 3, H, W] -> [B, K]


TARGET = OnnxTarget()
