"""How each precision is made: the program's compute precision and what gets compressed.

Only weights are compressed: the configs name the constants feeding the `weight` input of conv and
linear ops, so biases and derived constants (Swin's relative-position bias, masks) stay exact.
Tensors under `weight_threshold` elements stay float.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from mobilevit_deploy.errors import ConversionError
from mobilevit_deploy.formats.mlpackage import iter_ops
from mobilevit_deploy.spec import ExportSpec, Precision

from .options import CoreMLOptions

WEIGHTED_OPS = ("conv", "linear")


@dataclass(frozen=True)
class Recipe:
    compute: str                          # "fp32" | "fp16": compute precision of the program
    compress: Callable | None = None      # (mlmodel, options, context) -> mlmodel
    min_ios: int = 16
    note: str = ""


def weight_constants(proto) -> list[str]:
    """Names of the const ops that feed the `weight` input of conv and linear ops in a model protobuf."""
    ops = list(iter_ops(proto))
    producers = {out.name: op for op in ops for out in op.outputs}
    names = []
    for op in ops:
        if op.type not in WEIGHTED_OPS or "weight" not in op.inputs:
            continue
        binding = op.inputs["weight"].arguments[0]
        producer = producers.get(binding.name) if binding.WhichOneof("binding") == "name" else None
        if producer is not None and producer.type == "const":
            label = producer.attributes["name"].immediateValue.tensor.strings.values if "name" in producer.attributes else []
            names.append(label[0] if label else producer.outputs[0].name)
    return sorted(set(names))


def module_constant(name: str) -> str:
    """A weight constant's name without the converter's op prefix and fp16 cast suffix:
    `op_0_stages_4_1_conv_proj_conv_weight_to_fp16` -> `stages_4_1_conv_proj_conv_weight` (the module path
    with "." as "_", then the parameter)."""
    return re.sub(r"_to_fp16$", "", re.sub(r"^op_\d+_", "", name))


def kept_constants(model, modules: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the (prefix-less) names its weight constants take in a converted program: every
    submodule's `weight` parameter, `<path with "_">_weight`."""
    out = {}
    for module in modules:
        out[module] = {f"{(f'{module}.{sub}' if sub else module).replace('.', '_')}_weight"
                       for sub, child in model.get_submodule(module).named_modules()
                       if isinstance(getattr(child, "weight", None), torch.Tensor) and child.weight.ndim >= 2}
    return out


def compressed_note(mlmodel, weights: int, spec: ExportSpec, options: CoreMLOptions) -> str:
    """A note saying how many weights were compressed; an error when none was (no silent fp16)."""
    compressed = sum(op.type.startswith("constexpr_") for op in iter_ops(mlmodel.get_spec()))
    if compressed == 0:
        raise ConversionError(
            f"coreml {spec.precision.value}: none of the {weights} conv/linear weight tensors has more than "
            f"{options.weight_threshold} elements, so nothing was compressed (lower options['weight_threshold'])"
        )
    return (f"{compressed} of {weights} conv/linear weight tensors compressed; "
            f"tensors of <= {options.weight_threshold} elements stay float")


def _weights_only(mlmodel, op_config, keep: frozenset = frozenset()):
    """An OptimizationConfig naming exactly the weight constants of conv and linear ops, but those in
    `keep` (prefix-less names, `kept_constants`): the modules `--keep-float` leaves float.

    Why by name: a global config also compresses derived constants (Swin's relative-position
    bias); a per-op-type config trips over coremltools' constant deduplication (a zero bias shared
    by a linear and a layer_norm is a "compression config conflict" in 9.0, as in random-init Swin).
    """
    import coremltools.optimize.coreml as cto

    return cto.OptimizationConfig(op_name_configs={name: op_config for name in weight_constants(mlmodel.get_spec())
                                                   if module_constant(name) not in keep})


def int8_weights(mlmodel, options: CoreMLOptions, context):
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=options.weight_threshold)
    return cto.linear_quantize_weights(mlmodel, _weights_only(mlmodel, config, context.get("keep", frozenset())))


def int4_weights(mlmodel, options: CoreMLOptions, context):
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                         block_size=options.block_size, weight_threshold=options.weight_threshold)
    return cto.linear_quantize_weights(mlmodel, _weights_only(mlmodel, config, context.get("keep", frozenset())))


def palettize(nbits: int):
    def compress(mlmodel, options: CoreMLOptions, context):
        import coremltools.optimize.coreml as cto

        config = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor",
                                        weight_threshold=options.weight_threshold)
        return cto.palettize_weights(mlmodel, _weights_only(mlmodel, config, context.get("keep", frozenset())))
    return compress


def w8a8(mlmodel, options: CoreMLOptions, context):
    """Activations calibrated through the reference interpreter (context: calibration, feed), then int8 weights."""
    from mobilevit_deploy.mil.calibrate import quantize_activations

    activations = quantize_activations(mlmodel, context["calibration"], context["feed"], options.ios)
    return int8_weights(activations, options, context)


RECIPES: dict[Precision, Recipe] = {
    Precision.fp32: Recipe("fp32"),
    Precision.fp16: Recipe("fp16"),
    Precision.int8: Recipe("fp16", int8_weights, note="conv/linear weights int8 linear per-channel (fp16 compute)"),
    Precision.palettize6: Recipe("fp16", palettize(6), note="conv/linear weights 6-bit k-means palettes (fp16 compute)"),
    Precision.palettize4: Recipe("fp16", palettize(4), note="conv/linear weights 4-bit k-means palettes (fp16 compute)"),
    Precision.int4: Recipe("fp16", int4_weights, min_ios=18,
                           note="conv/linear weights int4 per-block (fp16 compute)"),
    Precision.w8a8: Recipe("fp16", w8a8, min_ios=17,
                           note="experimental: int8 activations and int8 per-channel weights (fp16 compute)"),
}
