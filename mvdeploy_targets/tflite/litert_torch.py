"""The litert-torch backend: PyTorch -> .tflite in this process, one recipe per precision.

  fp32          litert_torch.convert(model, (example,))
  fp16          + quant_config=quant_recipes.full_fp16_recipe(): fp16 weights (ai-edge-quantizer
                float casting), float32 compute and I/O
  int8-static   torchao PT2E static PTQ with litert-torch's PT2EQuantizer (symmetric, per-channel
                weights), calibrated by running `calibration.batches` through the observed graph
                (whole batches through a batch-dynamic export); ops the quantizer leaves out
                (LayerNorm, softmax, SiLU...) stay float between QUANTIZE/DEQUANTIZE, GELU is int8.
  int8          the same, shaped for XNNPACK (measured fastest on LiteRT's CPU delegate, accuracy
                kept): SiLU written as x*sigmoid(x) so it quantizes to int8 LOGISTIC+MUL, which
                XNNPACK runs; int8 GELU, which XNNPACK lacks and which splits the delegated graph,
                computed in float inside the graph (formats.tflite.float_islands).
                litert-torch always makes the graph's I/O int8; without `int8_io` both int8 files
                get float32 I/O (one QUANTIZE in front, one DEQUANTIZE behind).
  int8-dynamic  + quant_config=quant_recipes.full_dynamic_recipe(): int8 weights, activations
                quantized at run time.

(`import litert_torch` below is the installed package, not this module: imports are absolute.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilevit_deploy.chatter import quiet_chatter, tail
from mobilevit_deploy.errors import ConversionError, MvDeployError, first_line
from mobilevit_deploy.formats.tflite import float_io, float_islands
from mobilevit_deploy.quantization.calibrate import quantized_graph, source_note
from mobilevit_deploy.quantization.fallback import outside
from mobilevit_deploy.spec import Calibration, ExportSpec, Layout, Precision



def convert(model: nn.Module, spec: ExportSpec, out_path: Path, calibration: Calibration | None) -> list[str]:
    """Write `out_path`; returns the notes the artifact carries."""
    with quiet_chatter() as chatter:
        try:
            import litert_torch

            nhwc = spec.layout is Layout.nhwc
            module = litert_torch.to_channel_last_io(model, args=[0]).eval() if nhwc else model
            example = (torch.zeros(spec.input_shape),)
            edge_model, notes = RECIPES[spec.precision](module, example, calibration, nhwc, spec.keep_float)
            edge_model.export(str(out_path))
        except MvDeployError:
            raise
        except Exception as e:
            raise ConversionError(f"litert-torch {spec.precision.value} conversion failed: "
                                  f"{type(e).__name__}: {first_line(e)}{tail(chatter())}") from None
    if spec.precision is Precision.int8:
        data, islands = float_islands(out_path.read_bytes(), XNNPACK_FLOAT_ONLY)
        if islands:
            out_path.write_bytes(data)
            notes.append(f"{islands} int8 {'/'.join(XNNPACK_FLOAT_ONLY)} op(s) computed in float inside the graph "
                         "(XNNPACK has no int8 kernel for them)")
    if spec.precision in (Precision.int8, Precision.int8_static) and not spec.int8_io:
        out_path.write_bytes(float_io(out_path.read_bytes()))
        notes.append("float32 I/O around the int8 graph (QUANTIZE at the input, DEQUANTIZE at the output)")
    return notes


def _fp32(module, example, calibration, nhwc, keep_float):
    import litert_torch
    return litert_torch.convert(module, example), []


def _fp16(module, example, calibration, nhwc, keep_float):
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes
    return (litert_torch.convert(module, example, quant_config=quant_recipes.full_fp16_recipe()),
            ["fp16 weights of conv and fully-connected ops (dequantized at load); float32 compute and I/O"])


def _int8_dynamic(module, example, calibration, nhwc, keep_float):
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes
    return (litert_torch.convert(module, example, quant_config=quant_recipes.full_dynamic_recipe()),
            ["int8-dynamic: int8 per-channel weights, activations quantized at run time; float32 I/O"])


XNNPACK_FLOAT_ONLY = ("GELU",)     # int8 ops the XNNPACK delegate does not take: computed in float instead


class SigmoidMul(nn.Module):
    """SiLU as x * sigmoid(x): PT2E annotates sigmoid (fixed 1/256 scale) and mul, so SiLU becomes int8
    LOGISTIC + MUL, both run by XNNPACK; an nn.SiLU stays float between DEQUANTIZE/QUANTIZE."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def _silu_as_sigmoid_mul(model: nn.Module) -> nn.Module:
    """A copy of the model with every nn.SiLU replaced by SigmoidMul (the same function)."""
    import copy

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.SiLU):
                setattr(parent, name, SigmoidMul())
    return model.eval()


def int8_quantizer(keep_float: tuple[str, ...] = ()):
    """The PT2E quantizer litert-torch lowers to TFLite int8: per-channel symmetric weights; the modules
    named in `keep_float` (and everything inside them) are left unannotated, so they compute in float."""
    from litert_torch.quantize import pt2e_quantizer

    quantizer = _keeping_float(keep_float) if keep_float else pt2e_quantizer.PT2EQuantizer()
    return quantizer.set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))


def _keeping_float(keep_float: tuple[str, ...]):
    """litert-torch's PT2EQuantizer with modules left out. Its own per-module configuration cannot say
    "none" (`set_module_name(name, None)` asserts), and its name filter parses nn_module_stack keys as
    `L__self___<name, "." as "_">` while torch.export writes `L__self__<qualified name>`; so the one hook
    every static pattern goes through takes `fallback.outside` (torchao's name filter) instead."""
    from litert_torch.quantize import pt2e_quantizer

    kept_out = outside(keep_float)

    class KeepFloatQuantizer(pt2e_quantizer.PT2EQuantizer):
        def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
            def annotated(node) -> bool:
                return kept_out(node) and (filter_fn is None or filter_fn(node))
            return super()._annotate_all_static_patterns(model, quantization_config, annotated)

    return KeepFloatQuantizer()


def _static(module, example, calibration, nhwc, keep_float, what: str):
    """PT2E static PTQ with the quantizer litert-torch lowers to TFLite int8; -> (edge model, notes)."""
    import litert_torch
    from litert_torch.quantize import quant_config

    quantizer = int8_quantizer(keep_float)
    quantized, _, seen = quantized_graph(module, example, quantizer, calibration, nhwc)
    edge_model = litert_torch.convert(quantized, example,
                                      quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return edge_model, [f"{what} calibrated on {source_note(calibration, seen)}"]


def _int8_static(module, example, calibration, nhwc, keep_float):
    return _static(module, example, calibration, nhwc, keep_float,
                   "recipe int8-static: PT2E static int8 (per-channel weights), as litert-torch makes it,")


def _int8(module, example, calibration, nhwc, keep_float):
    return _static(_silu_as_sigmoid_mul(module), example, calibration, nhwc, keep_float,
                   "recipe int8 (fastest on XNNPACK): PT2E static int8 (per-channel weights), int8 SiLU, "
                   "float GELU,")


# precision -> recipe(module, example inputs, calibration, nhwc, modules kept float) -> (edge model, notes)
RECIPES: dict[Precision, Callable] = {
    Precision.fp32: _fp32,
    Precision.fp16: _fp16,
    Precision.int8: _int8,
    Precision.int8_static: _int8_static,
    Precision.int8_dynamic: _int8_dynamic,
}
