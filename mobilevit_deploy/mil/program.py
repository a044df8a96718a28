"""An ML Program read back from a saved .mlpackage, as plain Python objects.

Only the saved files are read: the model protobuf (found and parsed by
`mobilevit_deploy.formats.mlpackage`) and the weight blob(s). Nothing is taken from the converter's
in-memory program, so what the interpreter runs is exactly what was written to disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..formats.mlpackage import DTYPES, SUB_BYTE_BITS, dtype_name, load_proto, model_files
from .blob import BlobFile, unpack_bits

NUMPY_BY_NAME = {short: np_dtype for short, np_dtype in DTYPES.values() if np_dtype is not None}


@dataclass(frozen=True)
class ValueType:
    """The declared type of a value: a tensor's dtype and shape (None dims are unknown), or a list/dict."""

    kind: str                                # "tensor", "list", "dict", "tuple"
    dtype: str = ""                          # "fp16", "fp32", "int32", "bool", "string", ...
    shape: tuple[int | None, ...] | None = None

    @property
    def numpy(self) -> type | None:
        return NUMPY_BY_NAME.get(self.dtype)

    def __str__(self) -> str:
        if self.kind != "tensor":
            return self.kind
        dims = ", ".join("?" if d is None else str(d) for d in self.shape or ())
        return f"{self.dtype}[{dims}]"


@dataclass(frozen=True)
class Var:
    name: str
    type: ValueType


@dataclass(frozen=True)
class Binding:
    """One argument of an op input: a named variable or an inline value."""

    name: str | None = None
    value: object = None


@dataclass
class Op:
    type: str
    name: str
    inputs: dict[str, tuple[Binding, ...]]
    outputs: tuple[Var, ...]
    attributes: dict[str, object] = field(default_factory=dict)
    has_blocks: bool = False

    def input_names(self) -> list[str]:
        return [b.name for bindings in self.inputs.values() for b in bindings if b.name is not None]


@dataclass
class Program:
    """The `main` function of an ML Program and the model protobuf around it."""

    path: Path
    proto: object                            # coremltools.proto.Model_pb2.Model
    opset: str                               # "CoreML7" for iOS 17, ...
    inputs: tuple[Var, ...]
    outputs: tuple[str, ...]
    ops: list[Op]

    @property
    def op_types(self) -> set[str]:
        return {op.type for op in self.ops}


def _value_type(proto) -> ValueType:
    kind = proto.WhichOneof("type")
    if kind == "tensorType":
        t = proto.tensorType
        name = dtype_name(t.dataType)
        dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in t.dimensions)
        return ValueType("tensor", name, dims)
    return ValueType({"listType": "list", "dictionaryType": "dict", "tupleType": "tuple"}.get(kind, kind or "none"))


class _ValueReader:
    """Turns MIL `Value` protos into numpy arrays, strings or lists; reads blobs on demand."""

    def __init__(self, weights_dir: Path):
        self.weights_dir = weights_dir
        self.blobs: dict[str, BlobFile] = {}

    def read(self, proto):
        vtype = _value_type(proto.type)
        which = proto.WhichOneof("value")
        if which == "blobFileValue":
            return self._blob(proto.blobFileValue, vtype)
        if which == "immediateValue":
            return self._immediate(proto.immediateValue, vtype)
        raise ArtifactError(f"value with no content (type {vtype})")

    def _blob(self, blob, vtype: ValueType) -> np.ndarray:
        file_name = blob.fileName.split("/")[-1]
        if file_name not in self.blobs:
            self.blobs[file_name] = BlobFile(self.weights_dir / file_name)
        flat = self.blobs[file_name].read(blob.offset)
        return _shaped(flat, vtype, f"blob {file_name}@{blob.offset}")

    def _immediate(self, imm, vtype: ValueType):
        which = imm.WhichOneof("value")
        if which == "list":
            return [self.read(v) for v in imm.list.values]
        if which == "tuple":
            return tuple(self.read(v) for v in imm.tuple.values)
        if which == "dictionary":
            return {self.read(kv.key): self.read(kv.value) for kv in imm.dictionary.values}
        tensor = imm.tensor
        content = tensor.WhichOneof("value")
        if vtype.dtype == "string":
            strings = list(tensor.strings.values)
            return strings[0] if vtype.shape == () else strings
        if content == "bytes":
            raw = np.frombuffer(tensor.bytes.values, dtype=np.uint8)
            if vtype.dtype in SUB_BYTE_BITS:
                count = int(np.prod(vtype.shape))
                flat = unpack_bits(raw, SUB_BYTE_BITS[vtype.dtype], count, vtype.dtype == "int4")
            else:
                flat = raw.view(vtype.numpy)
        else:
            flat = np.asarray(list(getattr(tensor, content).values)) if content else np.zeros(0)
        return _shaped(flat.astype(vtype.numpy), vtype, "immediate value")


def _shaped(flat: np.ndarray, vtype: ValueType, where: str) -> np.ndarray:
    shape = tuple(vtype.shape or ())
    if None in shape:
        raise ArtifactError(f"{where}: constant with unknown shape {vtype}")
    if flat.size != int(np.prod(shape)):
        raise ArtifactError(f"{where}: holds {flat.size} values, its type {vtype} needs {int(np.prod(shape))}")
    return flat.astype(vtype.numpy, copy=False).reshape(shape)


def load_program(package: Path) -> Program:
    """Read the `main` function of the ML Program saved at `package`, with every constant materialized."""
    package = Path(package)
    proto = load_proto(package)
    if proto.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{package}: a Core ML '{proto.WhichOneof('Type')}' model, not an ML Program")
    _, weights_dir = model_files(package)
    functions = proto.mlProgram.functions
    if "main" not in functions:
        raise ArtifactError(f"{package}: the ML Program has no 'main' function (has: {', '.join(functions)})")
    main = functions["main"]
    block = main.block_specializations[main.opset]
    reader = _ValueReader(weights_dir)
    ops = [_op(op, reader) for op in block.operations]
    inputs = tuple(Var(v.name, _value_type(v.type)) for v in main.inputs)
    return Program(package, proto, main.opset, inputs, tuple(block.outputs), ops)


def _op(proto, reader: _ValueReader) -> Op:
    inputs = {
        key: tuple(
            Binding(name=b.name) if b.WhichOneof("binding") == "name" else Binding(value=reader.read(b.value))
            for b in arg.arguments
        )
        for key, arg in proto.inputs.items()
    }
    outputs = tuple(Var(o.name, _value_type(o.type)) for o in proto.outputs)
    attributes = {key: reader.read(value) for key, value in proto.attributes.items()}
    name = attributes.get("name") or (outputs[0].name if outputs else proto.type)
    return Op(proto.type, str(name), inputs, outputs, attributes, has_blocks=len(proto.blocks) > 0)
