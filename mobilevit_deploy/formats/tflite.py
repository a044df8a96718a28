"""The .tflite format: read a flatbuffer without running it, and rewrite its interface.

Reading (`read_tflite`) gives subgraph 0's I/O tensors, every op name and the tensor types, so
files the interpreter cannot run (Flex ops) are refused by name before an interpreter sees them,
and a file's precision can be told from the file alone (`precision_of`).

Rewriting works on the object API of ai_edge_litert's schema: `float_io` puts float32 I/O around
an int8-I/O graph, `nchw_input` puts a TRANSPOSE in front of an NHWC input. This is the only module
that parses or writes .tflite flatbuffers; converters and the LiteRT runner both call it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConversionError
from ..parity.audit import StoredTensor, rounding_bound
from ..spec import Precision, TensorSpec, guess_layout
from .flatbuffer import read_flatbuffer

# Custom ops the stock LiteRT op resolver registers; any other custom op cannot run here.
RESOLVER_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess"})


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class TfliteFacts:
    """What a .tflite file declares, read from its flatbuffer (no interpreter involved)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: Counter                          # op name ("CONV_2D", "FlexErf") -> count, all subgraphs
    custom_codes: frozenset[str]          # names of the custom (non-builtin) op codes
    weight_types: frozenset[str]          # types of constant tensors ("FLOAT32", "INT8", "FLOAT16")
    activation_types: frozenset[str]      # types of non-constant tensors

    @property
    def custom_ops(self) -> list[str]:
        """Custom ops the stock interpreter cannot run: Flex (TensorFlow Select) ops and the like."""
        return sorted(op for op in self.custom_codes if op not in RESOLVER_CUSTOM_OPS)


def read_tflite(path: Path) -> TfliteFacts:
    """Parse the flatbuffer: subgraph 0's I/O tensors (shape, dtype, quantization) and every op name."""
    from ai_edge_litert import schema_py_generated as schema

    return read_flatbuffer(path, b"TFL3", "a TFLite flatbuffer",
                           lambda data: _facts(schema.Model.GetRootAs(data, 0), schema))


def _facts(model, schema) -> TfliteFacts:
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names, custom = [], set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.CustomCode():
            op_names.append(code.CustomCode().decode("utf-8", "replace"))
            custom.add(op_names[-1])
        else:
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            op_names.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))

    ops: Counter = Counter()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for j in range(graph.OperatorsLength()):
            ops[op_names[graph.Operators(j).OpcodeIndex()]] += 1

    if model.SubgraphsLength() == 0:
        raise ArtifactError("the model has no subgraph")
    graph = model.Subgraphs(0)

    def is_constant(tensor) -> bool:
        b = tensor.Buffer()
        if b <= 0 or b >= model.BuffersLength():
            return False
        buf = model.Buffers(b)
        return buf.DataLength() > 0 or buf.Offset() > 1

    weights, activations = set(), set()
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        (weights if is_constant(tensor) else activations).add(type_names.get(tensor.Type(), str(tensor.Type())))

    def tensor_spec(index: int, is_input: bool) -> TensorSpec:
        tensor = graph.Tensors(index)
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        dtype = type_names.get(tensor.Type(), str(tensor.Type())).lower()
        scale = zero_point = None
        q = tensor.Quantization()
        if q is not None and q.ScaleLength() == 1 and dtype in ("int8", "uint8", "int16"):
            scale, zero_point = float(q.Scale(0)), int(q.ZeroPoint(0))
        layout = guess_layout(shape) if is_input else None
        name = tensor.Name().decode("utf-8", "replace") if tensor.Name() else f"tensor_{index}"
        return TensorSpec(name, shape, dtype, layout, scale, zero_point)

    inputs = tuple(tensor_spec(int(i), True) for i in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    outputs = tuple(tensor_spec(int(i), False) for i in graph.OutputsAsNumpy()) if graph.OutputsLength() else ()
    return TfliteFacts(inputs, outputs, ops, frozenset(custom), frozenset(weights), frozenset(activations))


def refuse_custom_ops(path: Path, facts: TfliteFacts) -> None:
    """ArtifactError naming the ops, before any interpreter is asked to run them."""
    custom = facts.custom_ops
    if not custom:
        return
    flex = [op for op in custom if op.startswith("Flex")]
    what = "Flex (TensorFlow Select) ops" if len(flex) == len(custom) else "custom ops"
    raise ArtifactError(
        f"{path} uses {what} the LiteRT interpreter cannot run: {', '.join(custom)}"
        + (" (they need the TensorFlow Flex delegate; convert without SELECT_TF_OPS)" if flex else "")
    )


def precision_of(facts: TfliteFacts, declared: str | None = None) -> Precision:
    """What a file holds: int8 activations -> int8; int8 weights only -> int8-dynamic; fp16 weights -> fp16.
    int8 and int8-static files hold the same tensor types: `declared` (what mvdeploy wrote about the
    file, `parity.report.declared_precision`) tells them apart, and is ignored when the file says otherwise."""
    if facts.activation_types & {"INT8", "UINT8"}:
        return Precision.int8_static if declared == Precision.int8_static.value else Precision.int8
    if "INT8" in facts.weight_types:
        return Precision.int8_dynamic
    if "FLOAT16" in facts.weight_types:
        return Precision.fp16
    return Precision.fp32


# Constant tensors that hold numbers (not shapes or indices), as the weight audit reads them
_FLOATS = {"FLOAT32": np.float32, "FLOAT16": np.float16}
_QUANTIZED = {"INT8": (np.int8, "int8"), "INT32": (np.int32, "int32 bias"), "INT16": (np.int16, "int16")}


@dataclass(frozen=True)
class OpTypes:
    """One op of subgraph 0: its name, the name of its first output, and the types of what it reads."""

    op: str                       # "FULLY_CONNECTED"
    output: str                   # its first output tensor's name (litert-torch: the module path, `debug.align`)
    input_types: tuple[str, ...]  # "INT8", "FLOAT32", ... (optional inputs left out)


def op_types(path: Path) -> list[OpTypes]:
    """Every op of subgraph 0 in execution order, with the types it reads: which ops compute in int8."""
    return read_flatbuffer(path, b"TFL3", "a TFLite flatbuffer", _op_types)


def _op_types(data: bytes) -> list[OpTypes]:
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    builtins = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = builtins.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        output = graph.tensors[op.outputs[0]].name if op.outputs is not None and len(op.outputs) else b""
        read = tuple(types.get(graph.tensors[i].type, "") for i in (op.inputs if op.inputs is not None else ()) if i >= 0)
        out.append(OpTypes(name, output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output), read))
    return out


def stored_tensors(path: Path) -> list[StoredTensor]:
    """Every float constant and every quantized constant of subgraph 0, dequantized, with the most a
    correct conversion may have moved each value: half a quantization step (scale / 2, per channel),
    half an fp16 unit in the last place, fp32 rounding."""
    return read_flatbuffer(path, b"TFL3", "a TFLite flatbuffer", _stored)


def _stored(data: bytes) -> list[StoredTensor]:
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for index, tensor in enumerate(graph.tensors):
        raw = model.buffers[tensor.buffer].data if 0 < tensor.buffer < len(model.buffers) else None
        kind = type_names.get(tensor.type, "")
        if raw is None or len(raw) == 0 or not (kind in _FLOATS or kind in _QUANTIZED):
            continue
        shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
        name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else (tensor.name or f"tensor_{index}")
        if kind in _FLOATS:
            values = np.frombuffer(bytes(raw), dtype=_FLOATS[kind]).reshape(shape)
            out.append(StoredTensor(name, values.astype(np.float64), rounding_bound(values), kind.lower()))
            continue
        q = tensor.quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            continue                        # integers without a scale: shapes, indices, permutations
        dtype, label = _QUANTIZED[kind]
        integers = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape).astype(np.float64)
        scale, zero = _per_axis(np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.float64),
                                q.quantizedDimension or 0, len(shape))
        out.append(StoredTensor(name, (integers - zero) * scale, scale / 2, label))
    return out


def _per_axis(scale: np.ndarray, zero: np.ndarray, axis: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-tensor or per-channel quantization parameters shaped to broadcast over the tensor."""
    if scale.size == 1 or rank == 0:
        return scale.reshape(()), (zero.reshape(()) if zero.size == 1 else np.zeros(()))
    shape = [1] * rank
    shape[axis] = scale.size
    zero = zero if zero.size == scale.size else np.zeros(scale.size)
    return scale.reshape(shape), zero.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Rewriting the interface


def float_io(data: bytes) -> bytes:
    """An int8-I/O model with float32 I/O: a QUANTIZE in front of each int8 input, a DEQUANTIZE behind each output."""
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    remap = {}
    for k, old in enumerate(graph.inputs):
        if graph.tensors[old].type == schema.TensorType.INT8:
            new = _add_tensor(model, graph, old, "_float", schema.TensorType.FLOAT32, keep_quantization=False)
            graph.operators.insert(0, _op(model, schema.BuiltinOperator.QUANTIZE, [new], [old]))
            graph.inputs[k] = remap[old] = new
    for k, old in enumerate(graph.outputs):
        if graph.tensors[old].type == schema.TensorType.INT8:
            new = _add_tensor(model, graph, old, "_float", schema.TensorType.FLOAT32, keep_quantization=False)
            graph.operators.append(_op(model, schema.BuiltinOperator.DEQUANTIZE, [old], [new]))
            graph.outputs[k] = remap[old] = new
    return _write_model(model, remap)


def nchw_input(data: bytes) -> bytes:
    """An NHWC-input model that takes NCHW: a TRANSPOSE(perm 0,3,1,2 inverse) in front of the input."""
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    old = graph.inputs[0]
    n, h, w, c = graph.tensors[old].shape
    new = _add_tensor(model, graph, old, "_nchw", graph.tensors[old].type, keep_quantization=True, shape=[n, c, h, w])
    perm = _add_constant(model, graph, "nchw_to_nhwc_perm", np.array([0, 2, 3, 1], dtype=np.int32))
    op = _op(model, schema.BuiltinOperator.TRANSPOSE, [new, perm], [old])
    op.builtinOptionsType = schema.BuiltinOptions.TransposeOptions
    op.builtinOptions = schema.TransposeOptionsT()
    graph.operators.insert(0, op)
    graph.inputs[0] = new
    return _write_model(model, {old: new})


def float_islands(data: bytes, op_names: tuple[str, ...]) -> tuple[bytes, int]:
    """Each int8 op named in `op_names` computed in float instead: DEQUANTIZE its int8 inputs, run it on
    float32, QUANTIZE its outputs back to the original int8 tensors (same scale and zero point).
    For int8 ops the XNNPACK delegate does not take (GELU): a float op inside the delegate is cheaper
    than an int8 reference kernel that splits the delegated graph. Returns (bytes, ops rewritten)."""
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    wanted = {getattr(schema.BuiltinOperator, name) for name in op_names}
    operators, count = [], 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin not in wanted or graph.tensors[op.inputs[0]].type != schema.TensorType.INT8:
            operators.append(op)
            continue
        inputs = []
        for t in op.inputs:
            if t >= 0 and graph.tensors[t].type == schema.TensorType.INT8:
                f = _add_tensor(model, graph, t, "_float", schema.TensorType.FLOAT32, keep_quantization=False)
                operators.append(_op(model, schema.BuiltinOperator.DEQUANTIZE, [t], [f]))
                inputs.append(f)
            else:
                inputs.append(t)
        outputs, requantize = [], []
        for t in op.outputs:
            f = _add_tensor(model, graph, t, "_float", schema.TensorType.FLOAT32, keep_quantization=False)
            requantize.append(_op(model, schema.BuiltinOperator.QUANTIZE, [f], [t]))
            outputs.append(f)
        op.inputs, op.outputs = inputs, outputs
        operators.append(op)
        operators.extend(requantize)
        count += 1
    graph.operators = operators
    return _write_model(model, {}), count


def _read_model(data: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    if len(model.subgraphs) != 1:
        raise ConversionError(f"expected a single-subgraph model, found {len(model.subgraphs)} subgraphs")
    return model, model.subgraphs[0]


def _write_model(model, remap: dict[int, int]) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    for signature in model.signatureDefs or []:
        for tensor_map in list(signature.inputs or []) + list(signature.outputs or []):
            tensor_map.tensorIndex = remap.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _add_tensor(model, graph, like: int, suffix: str, tensor_type: int, keep_quantization: bool,
                shape: list[int] | None = None) -> int:
    from ai_edge_litert import schema_py_generated as schema

    src = graph.tensors[like]
    tensor = schema.TensorT()
    tensor.shape = list(shape if shape is not None else src.shape)
    tensor.type = tensor_type
    tensor.buffer = _add_buffer(model, None)
    name = src.name.decode() if isinstance(src.name, bytes) else (src.name or f"tensor_{like}")
    tensor.name = name + suffix
    tensor.quantization = src.quantization if keep_quantization else None
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _add_constant(model, graph, name: str, value: np.ndarray) -> int:
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.shape = list(value.shape)
    tensor.type = {np.dtype(np.int32): schema.TensorType.INT32}[value.dtype]
    tensor.buffer = _add_buffer(model, value)
    tensor.name = name
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _add_buffer(model, value: np.ndarray | None) -> int:
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    if value is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _op(model, builtin: int, inputs: list[int], outputs: list[int]):
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, builtin)
    op.inputs, op.outputs = list(inputs), list(outputs)
    return op


def _opcode(model, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if not code.customCode and max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
