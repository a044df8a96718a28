"""The TFLite target: PyTorch -> .tflite with litert-torch (default) or through ONNX with onnx2tf, run by LiteRT.

`convert` validates the request (BaseTarget.validate), hands the work to a backend (litert_torch.py,
onnx2tf.py), then reads the written file back (I/O, op names) before it describes it: Flex or
other custom ops the interpreter cannot run are refused by name, and an int8-dynamic file is run
on a probe input first (one that outputs zeros or unrelated numbers is refused with ConversionError).
"""
from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mobilevit_deploy.debug.align import tflite_scope
from mobilevit_deploy.debug.capture import LiteRTCapture
from mobilevit_deploy.errors import ArtifactError, ConversionError, TargetUnavailableError
from mobilevit_deploy.extras import ONNX2TF
from mobilevit_deploy.formats.tflite import (TfliteFacts, op_types, precision_of, read_tflite, refuse_custom_ops,
                                             stored_tensors)
from mobilevit_deploy.parity.audit import StoredTensor
from mobilevit_deploy.parity.report import declared_precision
from mobilevit_deploy.parity.tolerances import FP16, FP16_REPLICA, FP32, INT8
from mobilevit_deploy.quantization.fallback import kept_note
from mobilevit_deploy.replica import Replica, fp16_weights, not_reproduced
from mobilevit_deploy.runners.litert import LiteRTRunner
from mobilevit_deploy.spec import Artifact, Calibration, ExportSpec, Precision
from mobilevit_deploy.targets import BaseTarget

from . import litert_torch, onnx2tf

DYNAMIC_MIN_COSINE = 0.9
INT8_TYPES = frozenset({"INT8", "UINT8", "INT16"})   # tensor types an op computing in integers reads
# Why no int8 file on LiteRT is compared with a replica: measured, a correct file sits as far from the PT2E
# int8 graph it was lowered from as from the float model (reference checkpoints: SQNR 30.5 / 28.2 dB against
# the graph, 30.3 / 26.7 dB against fp32; random mobilevitv2_050: 16.0 dB, cosine 0.980). LiteRT's int8
# LOGISTIC is a lookup table up to 4 steps from the exact sigmoid, and the difference grows through the
# network, so no bound tighter than the accuracy bound holds. The weight audit proves the stored int8 values.
INT8_ON_LITERT = ("LiteRT's int8 kernels (lookup-table activations) put a correct file as far from the PT2E int8 "
                  "graph as from the float model, so no tighter bound holds; the weight audit checks its int8 values")          # below this an int8-dynamic file does not follow the model at all

# converter name -> backend(model, spec, out_path, calibration) -> notes; the first is the default
CONVERTERS: dict[str, Callable[[nn.Module, ExportSpec, Path, Calibration | None], list[str]]] = {
    "litert-torch": litert_torch.convert,
    "onnx2tf": onnx2tf.convert,
}


@dataclasses.dataclass(frozen=True)
class TFLiteOptions:
    """TFLite takes no options of its own (precision, layout and int8 I/O are in the ExportSpec)."""


class TFLiteTarget(BaseTarget):
    name = "tflite"
    suffix = ".tflite"
    precisions = (Precision.fp32, Precision.fp16, Precision.int8, Precision.int8_static, Precision.int8_dynamic)
    converters = tuple(CONVERTERS)
    Options = TFLiteOptions
    calibrated = (Precision.int8, Precision.int8_static)
    int8_io_precisions = (Precision.int8, Precision.int8_static)
    float_fallback = (Precision.int8, Precision.int8_static)     # litert-torch's PT2E quantizer (--keep-float)
    tolerances = {Precision.fp32: FP32, Precision.fp16: FP16, Precision.int8: INT8,
                  Precision.int8_static: INT8, Precision.int8_dynamic: INT8}
    keeps_epsilons = True          # litert-torch and onnx2tf decompose LayerNorm: its epsilon is a constant
    integrity = {Precision.fp16: FP16_REPLICA}    # int8: see INT8_ON_LITERT
    requires = ("ai_edge_litert", "litert_torch", "torchao")
    intermediates = LiteRTCapture
    arm64_unsupported = None       # ai-edge-litert's aarch64 wheel runs under the ARM64 engine (emulation.py)

    def layer_quantizer(self):
        """The PT2E quantizer of the litert-torch int8 conversion, for the report's per-layer analysis."""
        return litert_torch.int8_quantizer()

    def _validate(self, spec: ExportSpec) -> None:
        reason = ONNX2TF.unavailable_reason() if spec.converter == "onnx2tf" else None
        if reason:
            raise TargetUnavailableError(reason)
        if spec.keep_float and spec.converter == "onnx2tf":
            raise ConversionError("--keep-float works through litert-torch's PT2E quantizer; "
                                  "onnx2tf quantizes the whole graph (drop --converter onnx2tf)")

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        spec = self.validated(spec, calibration)
        converter = spec.converter or self.converters[0]
        out_path = Path(out_path)
        model = model.eval()
        notes = CONVERTERS[converter](model, spec, out_path, calibration)
        facts = read_tflite(out_path)
        try:
            refuse_custom_ops(out_path, facts)
        except ArtifactError as e:
            out_path.unlink(missing_ok=True)
            raise ConversionError(f"{converter} made a file LiteRT cannot run: {e}") from None
        artifact = _describe(out_path, facts, spec.precision, converter, notes)
        if spec.keep_float:
            artifact = _kept_float(artifact, spec.keep_float, {name for name, _ in model.named_modules() if name})
        if spec.precision is Precision.int8_dynamic:
            self._refuse_degenerate(artifact, model, converter)
        artifact = replace(artifact, notes=(*artifact.notes, delegation_note(artifact)))
        return replace(artifact, replica=self.replica(model, artifact, calibration))

    def replica(self, model: nn.Module, artifact: Artifact, calibration: Calibration | None) -> Replica:
        """fp16: the model with fp16-rounded conv/linear weights (any converter stores them so). Not int8."""
        precision = artifact.precision
        if precision is Precision.fp16:
            return fp16_weights(model)
        if precision is Precision.fp32:
            return not_reproduced("tflite fp32: the accuracy comparison is already at the file's precision")
        return not_reproduced(INT8_ON_LITERT)

    def stored_tensors(self, artifact: Artifact) -> list[StoredTensor]:
        return stored_tensors(artifact.path)

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        """Describe a .tflite from the file itself; `precision` (default: read from the tensor types, and
        int8 told from int8-static by what mvdeploy wrote about the file)."""
        path = Path(path)
        facts = read_tflite(path)
        refuse_custom_ops(path, facts)
        if len(facts.inputs) != 1 or len(facts.inputs[0].shape) != 4:
            raise ArtifactError(f"{path}: expected one image input [1, 3, H, W] or [1, H, W, 3], "
                                f"found {[t.shape for t in facts.inputs]}")
        return _describe(path, facts, precision or precision_of(facts, declared_precision(path)), "", ())

    def runner(self, artifact: Artifact, *, num_threads: int | None = None, **engine_options) -> LiteRTRunner:
        return LiteRTRunner(artifact, num_threads=num_threads, **engine_options)

    def _refuse_degenerate(self, artifact: Artifact, model: nn.Module, converter: str) -> None:
        """Run the new file on two seeded probe images: all-zero or unrelated outputs are a failed conversion."""
        _, c, h, w = artifact.inputs[0].canonical_shape
        probe = torch.randn((2, c, h, w), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = torch.cat([model(probe[i:i + 1]) for i in range(len(probe))]).float().numpy()
        with self.runner(artifact) as runner:
            got = runner.infer(probe.numpy())
        cos = np.sum(got * expected, 1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-30)
        problem = None
        if not np.all(np.isfinite(got)):
            problem = "NaN/Inf outputs"
        elif not np.any(got):
            problem = "all-zero outputs"
        elif cos.min() < DYNAMIC_MIN_COSINE:
            problem = f"outputs unrelated to the model (cosine {cos.min():.3f} on a probe input)"
        if problem:
            Path(artifact.path).unlink(missing_ok=True)
            other = next(name for name in self.converters if name != converter)
            raise ConversionError(f"{converter} int8-dynamic produced a broken file ({problem}); "
                                  f"try --precision int8 with calibration, fp16, or --converter {other}")


def delegation_note(artifact: Artifact) -> str:
    """'XNNPACK takes 779 of 779 ops' (+ which it leaves to the reference kernels): a split delegated
    graph is the usual reason a quantized file is not faster."""
    with LiteRTRunner(artifact) as runner:
        d = runner.delegation()
    left = ", ".join(f"{name} x{count}" for name, count in sorted(d["not_delegated"].items()))
    return f"XNNPACK takes {d['delegated']} of {d['ops']} ops" + (f"; not delegated: {left}" if left else "")


def int8_modules(path: Path, modules: tuple[str, ...], module_names: set[str]) -> dict[str, int]:
    """Of `modules`, how many of each one's ops in the file read int8 values ({} when all compute in
    float), and which have no op at all (-1): read from the ops' own tensor names (litert-torch writes the
    module path, `debug.align.tflite_scope`); QUANTIZE/DEQUANTIZE at a module's edges are not its compute."""
    seen = dict.fromkeys(modules, 0)
    int8 = dict.fromkeys(modules, 0)
    for op in op_types(path):
        scope = tflite_scope(op.output, module_names)
        for module in (m for m in modules if scope is not None and (scope == m or scope.startswith(m + "."))):
            seen[module] += 1
            if op.op not in ("QUANTIZE", "DEQUANTIZE") and set(op.input_types) & INT8_TYPES:
                int8[module] += 1
    return {m: (-1 if not seen[m] else int8[m]) for m in modules if int8[m] or not seen[m]}


def _kept_float(artifact: Artifact, modules: tuple[str, ...], module_names: set[str]) -> Artifact:
    """The file checked: each kept module has ops, none of them reading int8; else ConversionError, no file."""
    wrong = int8_modules(Path(artifact.path), modules, module_names)
    if wrong:
        Path(artifact.path).unlink(missing_ok=True)
        said = ", ".join(f"{m} ({'no op in the file' if n < 0 else f'{n} int8 ops'})" for m, n in wrong.items())
        raise ConversionError(f"--keep-float: the file still quantizes {said}")
    return replace(artifact, keep_float=modules, notes=(*artifact.notes, kept_note(modules)))


def _describe(path: Path, facts: TfliteFacts, precision: Precision, converter: str,
              notes: tuple[str, ...] | list[str]) -> Artifact:
    notes = list(notes)
    inner = facts.ops.get("DEQUANTIZE", 0) + facts.ops.get("QUANTIZE", 0)
    if precision in (Precision.int8, Precision.int8_static) and inner > 2:
        notes.append(f"mixed int8/float graph: {inner} QUANTIZE/DEQUANTIZE ops "
                     "(ops without int8 kernels run in float)")
    return Artifact(path, "tflite", precision, facts.inputs, facts.outputs, converter, tuple(notes))


TARGET = TFLiteTarget()
