"""Faults written into a correct .tflite, for the negative controls of the parity checks (issue 24).

Each fault takes the file's bytes and returns faulty bytes; the flatbuffer stays valid (only constant data
or quantization parameters change), so every fault reaches the checks rather than the loader:

  scale_weights    one weight tensor (the largest) scaled by 1% (int8: its integers, rounded)
  zero_bias        the bias of one convolution or linear layer (the largest) set to zero
  move_int8        16 int8 values of the largest weight tensor moved by 3 quantization steps
  scale_quant      every quantization scale of the largest int8 weight tensor times 1.01
  ln_epsilon       the LayerNorm epsilon constant (1e-5) times EPSILON_FACTOR
  flip_bytes       8 bytes of the largest constant buffer inverted (spread over the buffer)
  negate_head      the classifier head (the last linear layer's weights and bias) negated: the logits flip
"""
from __future__ import annotations

import numpy as np

EPSILON = np.float32(1e-5)       # nn.LayerNorm's default, the one the reference models use
EPSILON_FACTOR = 10.0            # the smallest epsilon change measured to fail check at fp16 and int8 (see test)
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _model(data: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    return model, model.subgraphs[0]


def _bytes(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _op_inputs(model, graph, position: int) -> list[int]:
    """Constant tensor indices at input `position` of every conv / linear op (through the DEQUANTIZE that
    turns fp16 weights into float32 at load)."""
    from ai_edge_litert import schema_py_generated as schema

    def builtin(op):
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    names = {getattr(schema.BuiltinOperator, n) for n in WEIGHT_OPS}
    dequantized = {op.outputs[0]: op.inputs[0] for op in graph.operators
                   if builtin(op) == schema.BuiltinOperator.DEQUANTIZE}
    out = []
    for op in graph.operators:
        if builtin(op) in names and len(op.inputs) > position and op.inputs[position] >= 0:
            index = dequantized.get(op.inputs[position], op.inputs[position])
            if model.buffers[graph.tensors[index].buffer].data is not None:
                out.append(index)
    return out


def _dtype(tensor):
    return {0: np.float32, 1: np.float16, 2: np.int32, 9: np.int8}[tensor.type]


def _values(model, tensor) -> np.ndarray:
    return np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=_dtype(tensor)).copy()


def _store(model, tensor, values: np.ndarray) -> None:
    model.buffers[tensor.buffer].data = np.frombuffer(values.astype(_dtype(tensor)).tobytes(), dtype=np.uint8)


def _largest(model, graph, position: int):
    """The conv / linear op input at `position` (1: weight, 2: bias) with the most values, then the largest norm."""
    candidates = _op_inputs(model, graph, position)
    return graph.tensors[max(candidates, key=lambda i: (_values(model, graph.tensors[i]).size,
                                                        float(np.linalg.norm(_values(model, graph.tensors[i]).astype(np.float64)))))]


def negate_head(data: bytes) -> bytes:
    """The last FULLY_CONNECTED op's weights and bias times -1 (int8 weights: their integers, -128 kept at 127)."""
    model, graph = _model(data)
    weights, biases = _op_inputs(model, graph, 1), _op_inputs(model, graph, 2)
    for index in (weights[-1], biases[-1] if biases else None):
        if index is not None:
            tensor = graph.tensors[index]
            values = -_values(model, tensor).astype(np.float64)
            _store(model, tensor, np.clip(values, -127, 127) if tensor.type == 9 else values)
    return _bytes(model)


def scale_weights(data: bytes, factor: float = 1.01) -> bytes:
    model, graph = _model(data)
    tensor = _largest(model, graph, 1)
    values = _values(model, tensor).astype(np.float64) * factor
    if tensor.type == 9:
        values = np.clip(np.round(values), -127, 127)
    _store(model, tensor, values)
    return _bytes(model)


def zero_bias(data: bytes) -> bytes:
    model, graph = _model(data)
    tensor = _largest(model, graph, 2)
    _store(model, tensor, np.zeros_like(_values(model, tensor)))
    return _bytes(model)


def move_int8(data: bytes, steps: int = 3, count: int = 16) -> bytes:
    model, graph = _model(data)
    tensor = _largest(model, graph, 1)
    assert tensor.type == 9, "move_int8 needs an int8 weight"
    values = _values(model, tensor).astype(np.int64)
    where = np.linspace(0, values.size - 1, count).astype(int)
    values[where] = np.where(values[where] > 0, values[where] - steps, values[where] + steps)
    _store(model, tensor, values)
    return _bytes(model)


def scale_quant(data: bytes, factor: float = 1.01) -> bytes:
    model, graph = _model(data)
    tensor = _largest(model, graph, 1)
    assert tensor.type == 9 and tensor.quantization is not None, "scale_quant needs a quantized weight"
    tensor.quantization.scale = [float(s) * factor for s in tensor.quantization.scale]
    return _bytes(model)


def ln_epsilon(data: bytes, factor: float = EPSILON_FACTOR) -> bytes:
    model, graph = _model(data)
    found = 0
    for tensor in graph.tensors:
        raw = model.buffers[tensor.buffer].data
        if tensor.type == 0 and raw is not None and len(raw) == 4 and _values(model, tensor)[0] == EPSILON:
            _store(model, tensor, np.array([EPSILON * factor], np.float32))
            found += 1
    assert found, "no LayerNorm epsilon constant in the file"
    return _bytes(model)


def flip_bytes(data: bytes, count: int = 8) -> bytes:
    model, graph = _model(data)
    buffer = max((b for b in model.buffers if b.data is not None), key=lambda b: len(b.data))
    raw = np.array(buffer.data, dtype=np.uint8)
    where = np.linspace(len(raw) // 8, len(raw) - len(raw) // 8, count).astype(int)
    raw[where] ^= 0xFF
    buffer.data = raw
    return _bytes(model)


FP16 = {"scale_weights": scale_weights, "zero_bias": zero_bias, "ln_epsilon": ln_epsilon, "flip_bytes": flip_bytes}
INT8 = {**FP16, "move_int8": move_int8, "scale_quant": scale_quant}
