"""PyTorch -> .pte in this process: torch.export, one recipe per precision, then the XNNPACK lowering.

  fp32          torch.export.export(model, (example,))
  int8          torchao PT2E static PTQ with ExecuTorch's XNNPACKQuantizer (symmetric, per-channel
                weights), calibrated by running whole `calibration.batches` through a batch-dynamic observed graph
  int8-dynamic  the same quantizer with is_dynamic=True on linear layers: int8 per-channel weights,
                activations quantized at run time; no calibration

Every recipe ends in `to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])` and
`to_executorch()`: what XNNPACK takes runs in its delegate, the rest on ExecuTorch's portable kernels.

Where the lowering time goes (mobilevit_xxs): `to_edge_transform_and_lower` spends about half in
decompositions and edge passes over the whole graph, and half in XNNPACK's preprocess, which runs
its ~17 passes once per delegated partition (each pass a fake-tensor re-trace). The graph broke into
50 partitions at ops XNNPACK does not take: `expand` and `squeeze` from 4-D `matmul` and `unbind`.
`xnnpack_friendly` rewrites those two (exactly: bmm on 3-D reshapes, narrow + view) before
lowering, so only LayerNorm and the last mean break it (23 partitions) and no copies run between them:
lowering CPU time 31.6 s -> 23.9 s at 64x64. Turning off the edge IR validity check
(`EdgeCompileConfig(_check_ir_validity=False)`) or dim-order ops (`_skip_dim_order=True`) made no
difference beyond the noise, so the checks stay on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilevit_deploy.chatter import quiet_chatter, tail
from mobilevit_deploy.errors import ConversionError, MvDeployError, first_line
from mobilevit_deploy.quantization.calibrate import quantized_graph, source_note
from mobilevit_deploy.quantization.fallback import outside
from mobilevit_deploy.replica import Replica
from mobilevit_deploy.spec import Calibration, ExportSpec, Precision


def convert(model: nn.Module, spec: ExportSpec, out_path: Path,
            calibration: Calibration | None) -> tuple[list[str], Replica | None]:
    """Write `out_path`; returns the notes the artifact carries and, for int8, its replica (the PT2E graph
    it lowered)."""
    with quiet_chatter() as chatter:
        try:
            example = (torch.zeros(spec.input_shape),)
            exported, notes, replica = RECIPES[spec.precision](model, example, calibration, spec.keep_float)
            Path(out_path).write_bytes(lower(exported, static_int8=spec.precision is Precision.int8).buffer)
        except MvDeployError:
            raise
        except Exception as e:
            raise ConversionError(f"executorch {spec.precision.value} conversion failed: "
                                  f"{type(e).__name__}: {first_line(e)}{tail(chatter())}") from None
    return notes, replica


def lower(exported: torch.export.ExportedProgram, static_int8: bool = False):
    """The XNNPACK delegate for what it takes, portable kernels for the rest; an ExecutorchProgramManager.

    `static_int8`: constant pads stay out of the delegate. XNNPACK (executorch 1.5.1) refuses an int8 pad
    whose input and output quantization differ when the program loads ("Failed to create
    StaticConstantPad node ... xnn_status_invalid_parameter": swin_micro's window padding)."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS, ConstantPadConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    configs = [c for c in ALL_PARTITIONER_CONFIGS if not (static_int8 and c is ConstantPadConfig)]
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner(configs=configs)]).to_executorch()


def _export(module: nn.Module, example: tuple) -> torch.export.ExportedProgram:
    return xnnpack_friendly(torch.export.export(module, example))


def xnnpack_friendly(exported: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """4-D matmul as bmm between reshapes, unbind as narrow + view: the same numbers in ops XNNPACK takes
    (the default decompositions give expand and squeeze copies, which split the delegate)."""
    aten = torch.ops.aten

    def matmul(a, b):                                   # torch.matmul's semantics, without expand copies
        a2 = a.unsqueeze(0) if a.dim() == 1 else a
        b2 = b.unsqueeze(-1) if b.dim() == 1 else b
        if b2.dim() == 2:                                                                 # [..., N, K] @ [K, M]
            out = torch.mm(a2.reshape(-1, a2.shape[-1]), b2).view(*a2.shape[:-1], b2.shape[-1])
        else:
            batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
            if tuple(a2.shape[:-2]) != tuple(batch):
                a2 = a2.expand(*batch, *a2.shape[-2:])
            if tuple(b2.shape[:-2]) != tuple(batch):
                b2 = b2.expand(*batch, *b2.shape[-2:])
            out = torch.bmm(a2.reshape(-1, *a2.shape[-2:]), b2.reshape(-1, *b2.shape[-2:]))  # [B*h, N, M]
            out = out.view(*batch, *out.shape[-2:])                                         # [B, h, N, M]
        if a.dim() == 1:
            out = out.squeeze(-2)
        if b.dim() == 1:
            out = out.squeeze(-1)
        return out

    def unbind(x, dim=0):
        dim = dim % x.dim()
        shape = [s for i, s in enumerate(x.shape) if i != dim]
        return tuple(x.narrow(dim, i, 1).view(shape) for i in range(x.shape[dim]))

    return exported.run_decompositions({aten.matmul.default: matmul, aten.unbind.int: unbind})


def _fp32(model, example, calibration, keep_float):
    return _export(model, example), [], None


def int8_quantizer(keep_float: tuple[str, ...] = ()):
    """The quantizer of the static int8 recipe, leaving the modules in `keep_float` in float."""
    return _quantizer(dynamic=False, keep_float=keep_float)


def _quantizer(dynamic: bool, keep_float: tuple[str, ...] = ()):
    """XNNPACK's quantizer (symmetric, per-channel weights). Dynamic: linear layers only; dynamically
    quantized convolutions break XNNPACK's lowering (ChannelsLastTaggedReshapePass: "required rank 4
    tensor to use channels_last format", executorch 1.5.1). `keep_float`: through the quantizer's own
    node filter (`set_filter_function`; its `set_module_name(name, None)` asserts in executorch 1.5.1):
    those modules are not annotated, and XNNPACK still runs them, in fp32."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                        get_symmetric_quantization_config)

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    quantizer = XNNPACKQuantizer().set_module_type(nn.Linear, config) if dynamic else XNNPACKQuantizer().set_global(config)
    return quantizer.set_filter_function(outside(keep_float)) if keep_float else quantizer


def _int8(model, example, calibration, keep_float):
    quantized, batched, seen = quantized_graph(model, example, int8_quantizer(keep_float), calibration,
                                               transform=xnnpack_friendly, fold=True)   # whole batches where it can
    replica = Replica("the PT2E int8 graph lowered to XNNPACK (XNNPACK quantizer), run in PyTorch", quantized,
                      batched=batched)
    return (torch.export.export(quantized, example),
            [f"recipe int8: static PT2E with the XNNPACK quantizer (per-channel weights), calibrated on "
             f"{source_note(calibration, seen)}"], replica)


def _int8_dynamic(model, example, calibration, keep_float):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    observed = prepare_pt2e(_export(model, example).module(), _quantizer(dynamic=True))
    with torch.no_grad():
        observed(*example)
    quantized = torch.export.export(convert_pt2e(observed), example)
    return quantized, ["int8-dynamic: int8 per-channel weights, activations quantized at run time; float32 I/O"], None


# precision -> recipe(model, example inputs, calibration, modules kept float) -> (exported program, notes, replica or None)
RECIPES: dict[Precision, Callable] = {
    Precision.fp32: _fp32,
    Precision.int8: _int8,
    Precision.int8_dynamic: _int8_dynamic,
}
