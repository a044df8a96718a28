"""The ExecuTorch target: PyTorch -> .pte (XNNPACK delegate, portable kernels for the rest), run by ExecuTorch.

`convert` validates the request (BaseTarget.validate), hands the work to export.py, then reads the written
file back (formats/pte.py) to describe it: its I/O, how many nodes the XNNPACK delegate took and
which ops it left to ExecuTorch's portable kernels (the artifact notes say both).
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

from torch import nn

from mobilevit_deploy.debug.capture import ExecuTorchCapture
from mobilevit_deploy.errors import ArtifactError, ConversionError
from mobilevit_deploy.formats.pte import PteFacts, precision_of, read_pte
from mobilevit_deploy.parity.tolerances import FP32, INT8, INT8_REPLICA
from mobilevit_deploy.quantization.fallback import kept_note
from mobilevit_deploy.replica import Replica, int8_graph, not_reproduced
from mobilevit_deploy.runners.executorch import ExecuTorchRunner
from mobilevit_deploy.spec import Artifact, Calibration, ExportSpec, Layout, Precision
from mobilevit_deploy.targets import BaseTarget

from . import export


@dataclasses.dataclass(frozen=True)
class ExecuTorchOptions:
    """ExecuTorch takes no options of its own (precision is in the ExportSpec)."""


class ExecuTorchTarget(BaseTarget):
    name = "executorch"
    suffix = ".pte"
    precisions = tuple(export.RECIPES)
    converters = ("xnnpack",)            # the delegate the program is lowered to
    Options = ExecuTorchOptions
    calibrated = (Precision.int8,)
    float_fallback = (Precision.int8,)           # the XNNPACK quantizer's per-module configuration (--keep-float)
    intermediates = ExecuTorchCapture            # the XNNPACK delegates' values, exposed as outputs of a copy
    tolerances = {Precision.fp32: FP32, Precision.int8: INT8, Precision.int8_dynamic: INT8}
    integrity = {Precision.int8: INT8_REPLICA}
    weights_unread = "the XNNPACK delegate packs a .pte's weights in its own blob, which is not read"
    requires = ("executorch", "torchao")
    arm64_unsupported = ("executorch's aarch64 Python runtime links libtorch (the aarch64 torch wheel is 427 MB), "
                         "which the ARM64 engine does not carry (README: what --arch arm64 proves)")

    def _validate(self, spec: ExportSpec) -> None:
        if spec.layout is not Layout.nchw:
            raise ConversionError("executorch: only the nchw layout is supported "
                                  "(the .pte takes NCHW; XNNPACK picks its own layout inside)")

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        spec = self.validated(spec, calibration)
        out_path = Path(out_path)
        notes, replica = export.convert(model.eval(), spec, out_path, calibration)
        facts = read_pte(out_path)
        artifact = _describe(out_path, facts, spec.precision, self.converters[0], notes)
        if spec.keep_float:
            artifact = _kept_float(artifact, facts, model, spec.keep_float)
        return replace(artifact, replica=replica or self.replica(model, artifact, calibration))

    def replica(self, model: nn.Module, artifact: Artifact, calibration: Calibration | None) -> Replica:
        """int8: the PT2E graph of the XNNPACK quantizer, calibrated again on the recorded images."""
        if artifact.precision is not Precision.int8:
            return not_reproduced(f"executorch {artifact.precision.value}: "
                                  + ("the accuracy comparison is already at the file's precision"
                                     if artifact.precision is Precision.fp32 else
                                     "activations quantized at run time are not reproduced"))
        if calibration is None:
            return not_reproduced("the int8 recipe's calibration is unknown (no parity report of mvdeploy's "
                                  "beside the file records it)")
        return int8_graph(model, export.int8_quantizer(artifact.keep_float), calibration, artifact.inputs[0].image_size,
                          f"the PT2E int8 graph of the XNNPACK quantizer, calibrated again on {calibration.source} "
                          f"({calibration.samples} images), run in PyTorch", transform=export.xnnpack_friendly)

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        """Describe a .pte from the file itself; `precision` (default: read from its tensor types)."""
        path = Path(path)
        facts = read_pte(path)
        if len(facts.inputs) != 1 or len(facts.inputs[0].shape) != 4 or facts.inputs[0].dtype != "float32":
            raise ArtifactError(f"{path}: expected one float32 image input [1, 3, H, W], found "
                                f"{[(t.shape, t.dtype) for t in facts.inputs]}")
        if not facts.outputs or facts.outputs[0].dtype != "float32":
            raise ArtifactError(f"{path}: expected float32 logits, found {[(t.shape, t.dtype) for t in facts.outputs]}")
        return _describe(path, facts, precision or precision_of(facts), "", ())

    def runner(self, artifact: Artifact, *, num_threads: int | None = None, **engine_options) -> ExecuTorchRunner:
        return ExecuTorchRunner(artifact, num_threads=num_threads, **engine_options)


def float_weights_missing(facts: PteFacts, model: nn.Module, modules: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Of `modules`, (those whose weight matrices the file's XNNPACK payloads do not store as fp32
    constants, those with no weight matrix to look for). The payloads carry no module names, so a
    module's weights are found by their element count among the fp32 constants of rank >= 2 (a
    quantized file stores every conv and linear weight as int8: no fp32 matrix at all)."""
    stored = Counter()
    for (datatype, dims), count in facts.delegated_constants.items():
        if datatype == "fp32" and len(dims) >= 2:
            stored[math.prod(dims)] += count
    missing, unchecked = [], []
    for name in modules:
        sizes = [p.numel() for p in model.get_submodule(name).parameters() if p.ndim >= 2]
        if not sizes:
            unchecked.append(name)
        for size in sizes:
            if stored[size] <= 0:
                missing.append(name)
                break
            stored[size] -= 1
    return missing, unchecked


def _kept_float(artifact: Artifact, facts: PteFacts, model: nn.Module, modules: tuple[str, ...]) -> Artifact:
    """The file checked: each kept module's weights stored in fp32; else ConversionError, no file."""
    missing, unchecked = float_weights_missing(facts, model, modules)
    if missing:
        Path(artifact.path).unlink(missing_ok=True)
        raise ConversionError(f"--keep-float: the file stores no fp32 weights of {', '.join(missing)} (still int8)")
    note = kept_note(modules) + (f" (no weight matrix to check: {', '.join(unchecked)})" if unchecked else "")
    return replace(artifact, keep_float=modules, notes=(*artifact.notes, note))


def _describe(path: Path, facts: PteFacts, precision: Precision, converter: str,
              notes: tuple[str, ...] | list[str]) -> Artifact:
    return Artifact(path, "executorch", precision, facts.inputs, facts.outputs, converter,
                    (*notes, facts.describe()))


TARGET = ExecuTorchTarget()
