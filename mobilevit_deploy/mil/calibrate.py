"""W8A8 activation calibration through the reference interpreter.

coremltools' `linear_quantize_activations` measures activation ranges with `MLModel.predict`,
which does not exist off macOS. The ranges are the only thing it needs the runtime for, so here
they come from the interpreter (`run(..., keep="all")`) and are handed to the same coremltools
graph passes that insert the quantize/dequantize pairs. Those passes are private API of
coremltools 9.0 (`compression::insert_*_quantize_dequantize_pair`): this path is experimental.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .interpreter import Interpreter

IOS_PROTO_VERSION = {16: 7, 17: 8, 18: 9}     # minimum iOS -> the model protobuf's specificationVersion


def activation_ranges(interpreter: Interpreter, batches, feed: Callable[[np.ndarray], np.ndarray]) -> dict[str, dict]:
    """{tensor name: {"rmin", "rmax"}} over every float tensor, for every sample of every batch."""
    name = interpreter.input_names[0]
    ranges: dict[str, dict] = {}
    for batch in batches:
        images = np.asarray(batch.detach().cpu().numpy() if hasattr(batch, "detach") else batch, dtype=np.float32)
        for image in images:
            x = feed(image[None])
            values = interpreter.run({name: x}, keep="all")
            values[name] = x
            for tensor, value in values.items():
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
                    seen = ranges.setdefault(tensor, {"rmin": np.inf, "rmax": -np.inf})
                    seen["rmin"] = min(seen["rmin"], float(value.min()))
                    seen["rmax"] = max(seen["rmax"], float(value.max()))
    return ranges


def share_concat_ranges(interpreter: Interpreter, ranges: dict[str, dict]) -> None:
    """Inputs and output of a concat get one common range (as coremltools does), so a quantized
    concat can keep one scale."""
    from coremltools.optimize.coreml.experimental._post_training_quantization import (
        _adjust_concat_surrounding_activation_stats,
    )

    groups = [
        [b.name for b in op.inputs["values"] if b.name is not None] + [op.outputs[0].name]
        for op in interpreter.program.ops if op.type == "concat"
    ]
    if groups:
        _adjust_concat_surrounding_activation_stats(groups, ranges)


def quantize_activations(mlmodel, calibration, feed: Callable[[np.ndarray], np.ndarray], ios: int):
    """An MLModel with int8 quantize/dequantize pairs around conv, linear, pooling and add inputs."""
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "float.mlpackage"
        mlmodel.save(str(package))
        interpreter = Interpreter.from_package(package)
        ranges = activation_ranges(interpreter, calibration.batches, feed)
        share_concat_ranges(interpreter, ranges)

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", weight_threshold=0))
    passes = []
    for name in ("compression::insert_prefix_quantize_dequantize_pair",
                 "compression::insert_suffix_quantize_dequantize_pair"):
        graph_pass = PASS_REGISTRY[name]
        graph_pass.set_options([PassOption("config", config)])
        graph_pass.set_options([PassOption("activation_stats", ranges)])
        passes.append(graph_pass)
    passes.append(PASS_REGISTRY["common::dequantize_quantize_pair_elimination"])
    return model_utils._apply_graph_pass(mlmodel, passes, spec_version=IOS_PROTO_VERSION[ios],
                                         pymil_load_func=milproto_load.load, skip_model_load=True)
