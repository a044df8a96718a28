"""PyTorch -> a Core ML MLModel: the torch frontends (trace, export) and the coremltools conversion.

The I/O names are fixed here: one input `image`, a float32 `logits` output, and for a classifier a
`probabilities` output and the predicted `classLabel`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from torch import Tensor, nn

from mobilevit_deploy.spec import ExportSpec

from .options import CoreMLOptions

INPUT_NAME = "image"
LOGITS = "logits"
PROBABILITIES = "probabilities"
CLASS_LABEL = "classLabel"


def _alias_as_identity() -> None:
    """torch.export leaves `aten.alias` in Swin's graph; coremltools 9.0 has no converter for it."""
    from coremltools.converters.mil.frontend.torch.ops import noop
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if "alias" not in _TORCH_OPS_REGISTRY:
        _TORCH_OPS_REGISTRY.set_func_by_name(noop, "alias")


def trace(model: nn.Module, example: Tensor):
    import torch

    with torch.no_grad():
        return torch.jit.trace(model, example, check_trace=False)


def export(model: nn.Module, example: Tensor):
    import torch

    _alias_as_identity()
    return torch.export.export(model, (example,)).run_decompositions({})


FRONTENDS: dict[str, Callable[[nn.Module, Tensor], object]] = {"trace": trace, "export": export}


def _add_classifier(program, labels: tuple[str, ...], target):
    """A converted MIL program with (logits, probabilities) outputs -> a classifier MLModel.

    Why two steps: ct.convert with both named outputs and a ClassifierConfig fails in coremltools 9.0
    (the classify op adds outputs the declared output list does not cover: IndexError in
    get_func_output). The first step fixes names and float32 dtypes; this one only adds `classify`.
    """
    import coremltools as ct

    program.functions["main"].set_output_types(None)
    classifier = ct.ClassifierConfig(list(labels), predicted_feature_name=CLASS_LABEL,
                                     predicted_probabilities_output=PROBABILITIES)
    return ct.convert(program, convert_to="mlprogram", classifier_config=classifier,
                      pass_pipeline=ct.PassPipeline.EMPTY, minimum_deployment_target=target,
                      compute_precision=ct.precision.FLOAT32)


def to_mlmodel(source, spec: ExportSpec, options: CoreMLOptions, compute: str):
    """A traced or exported model -> an ML Program MLModel computing in `compute` ("fp32" | "fp16")."""
    import coremltools as ct

    if options.image_input:
        inputs = [ct.ImageType(name=INPUT_NAME, shape=spec.input_shape, scale=1 / 255.0,
                               bias=[0.0, 0.0, 0.0], color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=spec.input_shape, dtype=np.float32)]
    outputs = [ct.TensorType(name=LOGITS, dtype=np.float32)]
    outputs += [ct.TensorType(name=PROBABILITIES, dtype=np.float32)] if options.labels else []
    precision = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}[compute]
    target = {16: ct.target.iOS16, 17: ct.target.iOS17, 18: ct.target.iOS18}[options.ios]
    if not options.labels:
        return ct.convert(source, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                          minimum_deployment_target=target, compute_precision=precision)
    program = ct.convert(source, inputs=inputs, outputs=outputs, convert_to="milinternal",
                         minimum_deployment_target=target, compute_precision=precision)
    return _add_classifier(program, options.labels, target)
