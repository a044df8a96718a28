"""The litert-torch backend: PyTorch -> .tflite in this process, one recipe per precision.

  fp32          litert_torch.convert(model, (example,))
  fp16          + quant_config=quant_recipes.full_fp16_recipe(): fp16 weights (ai-edge-quantizer
                float casting), float32 compute and I/O
  int8          torchao PT2E static PTQ with litert-torch's PT2EQuantizer (symmetric, per-channel
                weights), calibrated by running `calibration.batches` through the prepared graph;
                ops without int8 kernels (LayerNorm, GELU, softmax...) stay float between
                QUANTIZE/DEQUANTIZE. litert-torch always makes the graph's I/O int8; without
                `int8_io` the file gets float32 I/O (one QUANTIZE in front, one DEQUANTIZE behind).
  int8-dynamic  + quant_config=quant_recipes.full_dynamic_recipe(): int8 weights, activations
                quantized at run time.

(`import litert_torch` below is the installed package, not this module: imports are absolute.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilevit_deploy.capture import captured_output, tail
from mobilevit_deploy.errors import ConversionError, MvDeployError, first_line
from mobilevit_deploy.formats.tflite import float_io
from mobilevit_deploy.spec import Calibration, ExportSpec, Layout, Precision

from .calibration import check_batch, no_images, source_note


def convert(model: nn.Module, spec: ExportSpec, out_path: Path, calibration: Calibration | None) -> list[str]:
    """Write `out_path`; returns the notes the artifact carries."""
    with captured_output() as captured:
        try:
            import litert_torch

            nhwc = spec.layout is Layout.nhwc
            module = litert_torch.to_channel_last_io(model, args=[0]).eval() if nhwc else model
            example = (torch.zeros(spec.input_shape),)
            edge_model, notes = RECIPES[spec.precision](module, example, calibration, nhwc)
            edge_model.export(str(out_path))
        except MvDeployError:
            raise
        except Exception as e:
            raise ConversionError(f"litert-torch {spec.precision.value} conversion failed: "
                                  f"{type(e).__name__}: {first_line(e)}{tail(captured())}") from None
    if spec.precision is Precision.int8 and not spec.int8_io:
        out_path.write_bytes(float_io(out_path.read_bytes()))
        notes.append("float32 I/O around the int8 graph (QUANTIZE at the input, DEQUANTIZE at the output)")
    return notes


def _fp32(module, example, calibration, nhwc):
    import litert_torch
    return litert_torch.convert(module, example), []


def _fp16(module, example, calibration, nhwc):
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes
    return (litert_torch.convert(module, example, quant_config=quant_recipes.full_fp16_recipe()),
            ["fp16 weights of conv and fully-connected ops (dequantized at load); float32 compute and I/O"])


def _int8_dynamic(module, example, calibration, nhwc):
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes
    return (litert_torch.convert(module, example, quant_config=quant_recipes.full_dynamic_recipe()),
            ["int8-dynamic: int8 per-channel weights, activations quantized at run time; float32 I/O"])


def _int8(module, example, calibration, nhwc):
    """Static PTQ through torchao's PT2E flow with the quantizer litert-torch lowers to TFLite int8."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(module, example).module()
    prepared = prepare_pt2e(graph, quantizer)
    image_size = example[0].shape[2]                             # [1, 3, S, S] or [1, S, S, 3]
    seen = 0
    with torch.no_grad():
        for batch in calibration.batches:
            check_batch(batch, image_size)
            for image in batch:                                      # the graph is exported at batch 1
                image = image.unsqueeze(0).float()
                prepared(image.permute(0, 2, 3, 1) if nhwc else image)
                seen += 1
    if seen == 0:
        raise no_images()
    quantized = convert_pt2e(prepared, fold_quantize=False)
    edge_model = litert_torch.convert(quantized, example,
                                      quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return edge_model, [f"int8 static (PT2E, per-channel weights) calibrated on {source_note(calibration, seen)}"]


# precision -> recipe(module, example inputs, calibration, nhwc) -> (edge model, notes)
RECIPES: dict[Precision, Callable] = {
    Precision.fp32: _fp32,
    Precision.fp16: _fp16,
    Precision.int8: _int8,
    Precision.int8_dynamic: _int8_dynamic,
}
