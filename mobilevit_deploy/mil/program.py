"""An ML Program read back from a saved .mlpackage, as plain Python objects.

Only the saved files are read: `Manifest.json`, the model spec protobuf (`model.mlmodel`) and the
weight blob(s). Nothing is taken from the converter's in-memory program, so what the interpreter
runs is exactly what was written to disk.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from .blob import BlobFile, unpack_bits

# MIL DataType name -> (short name used in MIL text, numpy dtype or None for non-numeric)
DTYPES: dict[str, tuple[str, type | None]] = {
    "BOOL": ("bool", np.bool_),
    "STRING": ("string", None),
    "FLOAT16": ("fp16", np.float16),
    "FLOAT32": ("fp32", np.float32),
    "FLOAT64": ("fp64", np.float64),
    "INT8": ("int8", np.int8),
    "INT16": ("int16", np.int16),
    "INT32": ("int32", np.int32),
    "INT64": ("int64", np.int64),
    "INT4": ("int4", np.int8),
    "UINT8": ("uint8", np.uint8),
    "UINT16": ("uint16", np.uint16),
    "UINT32": ("uint32", np.uint32),
    "UINT64": ("uint64", np.uint64),
    "UINT4": ("uint4", np.uint8),
    "UINT2": ("uint2", np.uint8),
    "UINT1": ("uint1", np.uint8),
    "UINT6": ("uint6", np.uint8),
    "UINT3": ("uint3", np.uint8),
}
SUB_BYTE_BITS = {"int4": 4, "uint4": 4, "uint2": 2, "uint1": 1, "uint6": 6, "uint3": 3}
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
    """The `main` function of an ML Program and the spec around it."""

    path: Path
    spec: object                             # coremltools.proto.Model_pb2.Model
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
        name = _dtype_name(t.dataType)
        dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in t.dimensions)
        return ValueType("tensor", name, dims)
    return ValueType({"listType": "list", "dictionaryType": "dict", "tupleType": "tuple"}.get(kind, kind or "none"))


def _dtype_name(code: int) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(code)
    if name not in DTYPES:
        raise ArtifactError(f"unsupported MIL data type {name}")
    return DTYPES[name][0]


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


def model_files(package: Path) -> tuple[Path, Path]:
    """(model spec file, weights directory) of a .mlpackage, found through its Manifest.json."""
    package = Path(package)
    manifest_path = package / "Manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{package} is not an .mlpackage (no Manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({e})") from None
    spec_path = package / "Data" / root
    if not spec_path.is_file():
        raise ArtifactError(f"{package}: the manifest names {root}, which is missing")
    return spec_path, spec_path.parent / "weights"


def load_spec(package: Path):
    """The Model protobuf of a saved .mlpackage."""
    from coremltools.proto import Model_pb2

    spec_path, _ = model_files(package)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_path.read_bytes())
    except Exception as e:                       # protobuf's DecodeError has no stable import path
        raise ArtifactError(f"{spec_path}: not a Core ML model spec ({e})") from None
    return spec


def load_program(package: Path) -> Program:
    """Read the `main` function of the ML Program saved at `package`, with every constant materialized."""
    package = Path(package)
    spec = load_spec(package)
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{package}: a Core ML '{spec.WhichOneof('Type')}' model, not an ML Program")
    _, weights_dir = model_files(package)
    functions = spec.mlProgram.functions
    if "main" not in functions:
        raise ArtifactError(f"{package}: the ML Program has no 'main' function (has: {', '.join(functions)})")
    main = functions["main"]
    block = main.block_specializations[main.opset]
    reader = _ValueReader(weights_dir)
    ops = [_op(op, reader) for op in block.operations]
    inputs = tuple(Var(v.name, _value_type(v.type)) for v in main.inputs)
    return Program(package, spec, main.opset, inputs, tuple(block.outputs), ops)


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


def classifier_labels(spec) -> list | None:
    """The class labels of a classifier ML Program (the `classes` of its classify op), else None.

    Reads only the spec (no weight blob), so describing an artifact stays cheap.
    """
    if spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        return None
    main = spec.mlProgram.functions["main"]
    ops = list(main.block_specializations[main.opset].operations)
    producers = {out.name: op for op in ops for out in op.outputs}
    reader = _ValueReader(Path("."))
    for op in ops:
        if op.type != "classify":
            continue
        binding = op.inputs["classes"].arguments[0]
        if binding.WhichOneof("binding") == "value":
            classes = reader.read(binding.value)
        else:
            classes = reader.read(producers[binding.name].attributes["val"])
        return [c if isinstance(c, str) else int(np.asarray(c)) for c in classes]
    return None


def op_types(spec) -> dict[str, set[str]]:
    """Op type -> the dtypes its outputs declare, read from the spec alone (no weights)."""
    if spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        return {}
    main = spec.mlProgram.functions["main"]
    found: dict[str, set[str]] = {}
    for op in main.block_specializations[main.opset].operations:
        dtypes = found.setdefault(op.type, set())
        for out in op.outputs:
            if out.type.WhichOneof("type") == "tensorType":
                dtypes.add(_dtype_name(out.type.tensorType.dataType))
    return found


def palette_bits(spec) -> set[int]:
    """Bit widths of the palettized (constexpr_lut_to_dense) weights, from the spec alone."""
    if spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        return set()
    main = spec.mlProgram.functions["main"]
    ops = list(main.block_specializations[main.opset].operations)
    out_types = {out.name: out.type for op in ops for out in op.outputs}
    bits = set()
    for op in ops:
        if op.type != "constexpr_lut_to_dense":
            continue
        if "lut" in op.attributes:                       # iOS 16 form: flat LUT of 2**nbits entries
            size = int(np.prod([d.constant.size for d in op.attributes["lut"].type.tensorType.dimensions]))
            bits.add(int(round(np.log2(size))))
        else:                                            # iOS 18 form: indices typed uint<nbits>
            binding = op.inputs["indices"].arguments[0]
            vtype = out_types.get(binding.name) if binding.WhichOneof("binding") == "name" else binding.value.type
            name = _dtype_name(vtype.tensorType.dataType) if vtype is not None else ""
            bits.add(SUB_BYTE_BITS.get(name, 8))
    return bits
