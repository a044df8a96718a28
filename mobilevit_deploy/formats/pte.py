"""The .pte format (an ExecuTorch program): read it without running it.

`read_pte` walks the program flatbuffer (schema: executorch/exir/_serialize/program.fbs) with the
plain `flatbuffers` runtime, not with executorch's own reader, which imports all of exir and torchao
(~10 s). It gives the `forward` method's I/O tensors, the operators that run on ExecuTorch's own
kernels (not delegated), the delegate calls per backend, and, for XNNPACK delegates, the number of
nodes and the tensor datatypes inside each payload (schema: backends/xnnpack/serialization/
runtime_schema.fbs), so a file's precision can be told from the file alone (`precision_of`).
This is the only module that parses .pte files; the converter and the runner both call it.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactError
from ..spec import Precision, TensorSpec, guess_layout
from .flatbuffer import read_flatbuffer

FILE_IDENTIFIER = b"ET12"          # bytes 4..8 of a program flatbuffer
METHOD = "forward"
XNNPACK = "XnnpackBackend"

# program.fbs ScalarType -> numpy dtype name
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                7: "float64", 11: "bool", 12: "qint8", 13: "quint8", 14: "qint32", 15: "bfloat16"}
# runtime_schema.fbs XNNDatatype -> name ("qcint8": per-channel int8 weights, "qdint8": dynamic int8)
XNN_DATATYPES = {1: "fp32", 2: "fp16", 3: "qint8", 4: "quint8", 5: "qint32", 6: "qcint8", 7: "qcint32",
                 8: "qcint4", 9: "qdint8", 10: "qbint4", 11: "qpint8", 12: "int32", 13: "pfp32"}
TENSOR, KERNEL_CALL, DELEGATE_CALL = 5, 1, 2       # union tags: KernelTypes.Tensor, InstructionArguments.*
INT8_DATATYPES = frozenset({"qint8", "quint8", "qcint8", "qpint8"})


@dataclass(frozen=True)
class PteFacts:
    """What a .pte file declares, read from its flatbuffers (no runtime involved)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    methods: tuple[str, ...]
    kernels: Counter             # operators run by ExecuTorch's kernels: "aten::native_layer_norm" -> calls
    delegates: Counter           # backend id -> delegate calls ("XnnpackBackend" -> 23)
    delegated_nodes: int         # XNNPACK nodes inside the delegate payloads
    delegated_types: frozenset[str]   # XNNPACK tensor datatypes in the payloads ("fp32", "qcint8", "qdint8")
    delegated_constants: Counter = field(default_factory=Counter)   # (datatype, dims) of the payloads' constant
                                                                    # tensors (weights) -> how many

    @property
    def kernel_calls(self) -> int:
        return sum(self.kernels.values())

    def describe(self) -> str:
        """'412 nodes in 23 XnnpackBackend delegate calls; not delegated: aten::native_layer_norm x21, ...'"""
        calls = ", ".join(f"{n} {backend}" for backend, n in sorted(self.delegates.items())) or "no"
        kept = ", ".join(f"{op} x{n}" for op, n in self.kernels.most_common()) or "nothing"
        nodes = f"{self.delegated_nodes} nodes in " if self.delegated_nodes else ""
        return f"{nodes}{calls} delegate calls; not delegated (ExecuTorch kernels): {kept}"


def read_pte(path: Path) -> PteFacts:
    return read_flatbuffer(path, FILE_IDENTIFIER, "an ExecuTorch program", _facts)


def precision_of(facts: PteFacts) -> Precision:
    """int8-dynamic when activations are quantized at run time, int8 when tensors are int8, fp16 when
    half, else fp32."""
    kernels = " ".join(facts.kernels)
    if "qdint8" in facts.delegated_types or "choose_qparams" in kernels:
        return Precision.int8_dynamic
    if facts.delegated_types & INT8_DATATYPES or "quantize_per" in kernels:
        return Precision.int8
    if "fp16" in facts.delegated_types:
        return Precision.fp16
    return Precision.fp32


# ---------------------------------------------------------------------------------------------
# A minimal flatbuffer table reader: field i is vtable slot 4 + 2 i; a union field takes two slots.


class _Table:
    def __init__(self, buf: bytearray, pos: int):
        import flatbuffers.table
        self.t = flatbuffers.table.Table(buf, pos)

    @classmethod
    def root(cls, buf: bytearray) -> "_Table":
        return cls(buf, struct.unpack_from("<I", buf, 0)[0])

    def _offset(self, field: int) -> int:
        return self.t.Offset(4 + 2 * field)

    def scalar(self, field: int, fmt: str, default=0):
        o = self._offset(field)
        return struct.unpack_from("<" + fmt, self.t.Bytes, self.t.Pos + o)[0] if o else default

    def string(self, field: int) -> str:
        o = self._offset(field)
        return self.t.String(self.t.Pos + o).decode("utf-8", "replace") if o else ""

    def table(self, field: int) -> "_Table | None":
        o = self._offset(field)
        return _Table(self.t.Bytes, self.t.Indirect(self.t.Pos + o)) if o else None

    def tables(self, field: int) -> list["_Table"]:
        o = self._offset(field)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [_Table(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def scalars(self, field: int, fmt: str) -> list:
        o = self._offset(field)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return list(struct.unpack_from(f"<{n}{fmt}", self.t.Bytes, start))

    def bytes(self, field: int) -> bytes:
        o = self._offset(field)
        if not o:
            return b""
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return bytes(self.t.Bytes[start:start + n])

    def union(self, field: int) -> tuple[int, "_Table | None"]:
        """(type tag, table) of a union field (its tag is the slot before it)."""
        return self.scalar(field, "B"), self.table(field + 1)


def _facts(data: bytes) -> PteFacts:
    buf = bytearray(data)
    program = _Table.root(buf)
    _validate_segments(data, program)
    plans = program.tables(1)                                          # Program.execution_plan
    methods = tuple(p.string(0) for p in plans)
    if METHOD not in methods:
        raise ArtifactError(f"the program has no {METHOD!r} method (methods: {', '.join(methods) or 'none'})")
    plan = plans[methods.index(METHOD)]
    values = plan.tables(2)                                            # ExecutionPlan.values

    def tensor_spec(position: int, index: int, is_input: bool) -> TensorSpec:
        name = f"{'input' if is_input else 'output'}_{position}"
        tag, value = values[index].union(0)                            # EValue.val
        if tag != TENSOR or value is None:
            return TensorSpec(name, (), "scalar")
        shape = tuple(int(s) for s in value.scalars(2, "i"))           # Tensor.sizes
        dtype = SCALAR_TYPES.get(value.scalar(0, "b"), f"scalar_type_{value.scalar(0, 'b')}")
        return TensorSpec(name, shape, dtype, guess_layout(shape) if is_input else None)

    inputs = tuple(tensor_spec(n, i, True) for n, i in enumerate(plan.scalars(3, "i")))
    outputs = tuple(tensor_spec(n, i, False) for n, i in enumerate(plan.scalars(4, "i")))
    operators = [op.string(0) for op in plan.tables(6)]                # Operator.name (overload left out)
    delegates = plan.tables(7)                                         # ExecutionPlan.delegates
    kernels, calls = Counter(), Counter()
    for chain in plan.tables(5):
        for instruction in chain.tables(2):
            tag, args = instruction.union(0)
            if tag == KERNEL_CALL:
                kernels[operators[args.scalar(0, "i")]] += 1
            elif tag == DELEGATE_CALL:
                calls[delegates[args.scalar(0, "i")].string(0)] += 1
    nodes, types, constants = 0, set(), Counter()
    for delegate in delegates:
        if delegate.string(0) == XNNPACK:
            payload_nodes, payload_types, payload_constants = _xnnpack_payload(
                _delegate_payload(data, buf, program, delegate))
            nodes += payload_nodes
            types |= payload_types
            constants += payload_constants
    return PteFacts(inputs, outputs, methods, kernels, calls, nodes, frozenset(types), constants)


def _validate_segments(data: bytes, program: _Table) -> None:
    """The program and every data segment (weights, delegate payloads) must lie inside the file."""
    if data[8:12] != b"eh00":
        return                                                         # no segments: all inline
    program_size, segment_base = struct.unpack_from("<QQ", data, 16)
    ends = [program_size] + [segment_base + s.scalar(0, "Q") + s.scalar(1, "Q") for s in program.tables(4)]
    if max(ends) > len(data):
        raise ArtifactError(f"the file ends at byte {len(data)} but its data runs to byte {max(ends)} (truncated?)")


def _delegate_payload(data: bytes, buf: bytearray, program: _Table, delegate: _Table) -> bytes:
    """A delegate's processed bytes: inline in the program, or a segment after it (extended header)."""
    reference = delegate.table(1)                                      # BackendDelegate.processed
    location, index = reference.scalar(0, "b"), reference.scalar(1, "I")
    if location == 0:                                                  # INLINE
        return program.tables(3)[index].bytes(0)                       # backend_delegate_data[i].data
    if data[8:12] != b"eh00":
        raise ArtifactError("a delegate segment is referenced but the file has no extended header")
    segment_base = struct.unpack_from("<Q", data, 24)[0]
    segment = program.tables(4)[index]                                 # Program.segments[i]
    offset, size = segment.scalar(0, "Q"), segment.scalar(1, "Q")
    return data[segment_base + offset:segment_base + offset + size]


def _xnnpack_payload(payload: bytes) -> tuple[int, set[str], Counter]:
    """(nodes, tensor datatypes, (datatype, dims) of constant tensors) of an XNNPACK payload: an XH00
    header, then an XNNGraph flatbuffer."""
    if payload[4:8] == b"XH00":
        offset, size = struct.unpack_from("<II", payload, 10)
        payload = payload[offset:offset + size]
    buf = bytearray(payload)
    graph = _Table.root(buf)
    types, constants = set(), Counter()
    for value in graph.tables(2):                                      # XNNGraph.xvalues
        tag, tensor = value.union(0)                                   # XValue.xvalue_union
        if tag == 2 and tensor is not None:                            # XNNQuantizedTensorValue
            tensor = tensor.table(0)
        if tensor is not None:
            code = tensor.scalar(0, "h")
            types.add(XNN_DATATYPES.get(code, f"datatype_{code}"))
            if tensor.scalar(3, "I"):                                  # XNNTensorValue.constant_buffer_idx: 0 = not
                constants[(XNN_DATATYPES.get(code, f"datatype_{code}"), tuple(tensor.scalars(2, "I")))] += 1
    return len(graph.tables(1)), types, constants                      # XNNGraph.xnodes
