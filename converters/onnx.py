"""ONNX target: torch.onnx.export (TorchScript exporter, opset 17+), run by onnxruntime."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilevit_deploy.errors import ArtifactError, ConversionError
from mobilevit_deploy.runners.base import Runner
from mobilevit_deploy.spec import Artifact, ExportSpec, Layout, Precision, TensorSpec

OPSET = 17


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, artifact: Artifact, threads: int = 2):
        spec = artifact.inputs[0]
        n, a, b, c = spec.shape
        canonical = (n, c, a, b) if spec.layout is Layout.nhwc else spec.shape
        super().__init__(canonical)
        self.artifact, self.threads, self.session = artifact, threads, None

    @property
    def engine(self) -> str:
        import onnxruntime
        return f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"

    def __enter__(self) -> "OnnxRuntimeRunner":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.artifact.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ArtifactError(f"onnxruntime cannot load {self.artifact.path}: {str(e).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        return self

    def __exit__(self, *exc) -> None:
        self.session = None

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self.artifact.inputs[0].layout is Layout.nhwc:
            x = x.transpose(0, 2, 3, 1)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]


class OnnxTarget:
    name = "onnx"
    suffix = ".onnx"
    precisions = (Precision.fp32,)
    converters = ("torch.onnx",)

    def unavailable_reason(self) -> str | None:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return f"onnx target needs onnx and onnxruntime ({e}); run make install"
        return None

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path, calibration=None) -> Artifact:
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
            raise ConversionError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return self.load(out_path, precision=spec.precision)

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        import onnx

        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception as e:
            raise ArtifactError(f"cannot read ONNX file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        initializers = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]

        def spec_of(value, is_input: bool) -> TensorSpec:
            dims = tuple(d.dim_value or 1 for d in value.type.tensor_type.shape.dim)
            layout = None
            if is_input and len(dims) == 4:
                layout = Layout.nhwc if dims[-1] == 3 and dims[1] != 3 else Layout.nchw
            return TensorSpec(value.name, dims, "float32", layout)

        if len(inputs) != 1 or len(spec_of(inputs[0], True).shape) != 4:
            raise ArtifactError(f"{path}: expected one image input [1, 3, H, W] or [1, H, W, 3]")
        return Artifact(Path(path), self.name, precision or Precision.fp32, (spec_of(inputs[0], True),),
                        tuple(spec_of(o, False) for o in graph.output), converter="torch.onnx")

    def runner(self, artifact: Artifact) -> Runner:
        return OnnxRuntimeRunner(artifact)


class NhwcInput(nn.Module):
    """Takes [B, H, W, 3] and feeds the wrapped NCHW model: apps usually hand over NHWC pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # [B, H, W, 3]
        return self.model(x.permute(0, 3, 1, 2))           # [B, 3, H, W] -> [B, K]


TARGET = OnnxTarget()
