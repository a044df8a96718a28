"""A saved ML Program's weights for the weight audit (`parity.audit`), as the interpreter materializes them.

  const (fp16, fp32)               the values, bound by the rounding of their type
  constexpr_affine_dequantize      (q - zero_point) * scale, bound by half a step (scale / 2, per channel)
  constexpr_blockwise_shift_scale  (data - offset) * scale, bound by half a step of its block
  constexpr_lut_to_dense           palettized: a k-means centre has no rounding bound; not audited
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..parity.audit import StoredTensor, rounding_bound
from .interpreter import Interpreter
from .ops import per_axis, repeat_blocks
from .program import load_program

FLOATS = (np.float16, np.float32)
# Beyond half a quantization step, a relative 2^-8 of the value: coremltools quantizes the fp16-rounded
# weights and stores the scale in fp16, each a few fp16 ulps (measured on mobilevit_xxs int8: 1 value in
# 8192 of a fc1 weight 2.9e-4 from the parameter, where half a step and one fp16 ulp give 2.84e-4).
FP16_SOURCE = 2.0 ** -8


def stored_tensors(package: Path) -> list[StoredTensor]:
    """Every float constant of the program, and every weight its constexpr ops decompress with a step."""
    interpreter = Interpreter(load_program(Path(package)))
    produced = {op.outputs[0].name: op for op in interpreter.program.ops if op.outputs}
    out = []
    for name, value in interpreter.constants.items():
        op = produced.get(name)
        declared = interpreter.types.get(name)
        if op is None or declared is None or declared.numpy not in FLOATS:
            continue
        value = np.asarray(value).astype(declared.numpy)          # the type the program stores it in
        bound = _bound(op, value, interpreter.constants)
        if bound is not None:
            out.append(StoredTensor(name, value.astype(np.float64), bound, _kind(op, value)))
    return out


def _inputs(op, constants: dict) -> dict[str, np.ndarray]:
    values = {key: value for key, value in op.attributes.items() if key not in ("name", "val")}
    values.update({key: constants[b.name] if b.name is not None else b.value
                   for key, bindings in op.inputs.items() for b in bindings[:1]})
    return {key: np.asarray(value) for key, value in values.items()}


def _bound(op, value: np.ndarray, constants: dict) -> np.ndarray | None:
    if op.type == "const":
        return rounding_bound(value)
    a = _inputs(op, constants)
    if op.type == "constexpr_affine_dequantize":
        return np.abs(per_axis(a["scale"].astype(np.float64), value.ndim, int(a.get("axis", 0)))) / 2 \
            + np.abs(value.astype(np.float64)) * FP16_SOURCE + rounding_bound(value)
    if op.type == "constexpr_blockwise_shift_scale":
        return np.abs(repeat_blocks(a["scale"].astype(np.float64), value.shape)) / 2 \
            + np.abs(value.astype(np.float64)) * FP16_SOURCE + rounding_bound(value)
    if op.type == "constexpr_cast":
        return rounding_bound(value.astype(np.float16))
    return None                             # palettized (lut_to_dense), sparse: no rounding bound


def _kind(op, value: np.ndarray) -> str:
    return {"const": str(value.dtype), "constexpr_affine_dequantize": "int8",
            "constexpr_blockwise_shift_scale": "blockwise int", "constexpr_cast": "float16"}[op.type]
