"""The .mlpackage format: find its files, read its model protobuf (`load_proto`), describe it, and
rewrite it reproducibly.

Everything here reads the model protobuf alone (no weight blob), so describing a package stays
cheap; the weights are read only by the reference interpreter (`mobilevit_deploy.mil`), which takes
the files from here. coremltools is imported for its protobuf classes only, inside the functions.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ArtifactError
from ..spec import Layout, Precision, Preprocess, TensorSpec

META_PREFIX = "mvdeploy."                        # keys mvdeploy itself writes into user_defined_metadata
PRECISION_KEY = f"{META_PREFIX}precision"
CONVERTER_KEY = f"{META_PREFIX}converter"
PREPROCESS_KEY = f"{META_PREFIX}preprocess"      # {"mean": [3], "std": [3], ...} of an image input

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

# Core ML feature ArrayDataType code -> dtype name
ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}


# ---------------------------------------------------------------- files and proto

def model_files(package: Path) -> tuple[Path, Path]:
    """(model protobuf file, weights directory) of a .mlpackage, found through its Manifest.json."""
    package = Path(package)
    manifest_path = package / "Manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{package} is not an .mlpackage (no Manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({e})") from None
    proto_path = package / "Data" / root
    if not proto_path.is_file():
        raise ArtifactError(f"{package}: the manifest names {root}, which is missing")
    return proto_path, proto_path.parent / "weights"


def load_proto(package: Path):
    """The Model protobuf of a saved .mlpackage."""
    proto_path, _ = model_files(package)
    proto = _model_pb2().Model()
    try:
        proto.ParseFromString(proto_path.read_bytes())
    except Exception as e:                       # protobuf's DecodeError has no stable import path
        raise ArtifactError(f"{proto_path}: not a Core ML model protobuf ({e})") from None
    return proto


def _model_pb2():
    """coremltools' generated protobuf module, without running coremltools' own __init__ when nothing has yet:
    that loads every converter frontend (with executorch installed, its edge dialect too), about 15 s of
    CPU before a protobuf can be read. The package's folder stands in for it while `coremltools.proto`
    loads; a later `import coremltools` runs the real one and finds `coremltools.proto` loaded."""
    import importlib.util
    import sys
    import types

    if "coremltools" not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or not spec.submodule_search_locations:
            raise ArtifactError("reading a .mlpackage needs coremltools: pip install 'mvdeploy[coreml]'")
        folder = types.ModuleType("coremltools")
        folder.__path__ = list(spec.submodule_search_locations)
        sys.modules["coremltools"] = folder
        try:
            from coremltools.proto import Model_pb2
        finally:
            if sys.modules.get("coremltools") is folder:
                del sys.modules["coremltools"]
        return Model_pb2
    from coremltools.proto import Model_pb2
    return Model_pb2


# coremltools' own metadata that is not a function of the model
UNREPRODUCIBLE_METADATA = ("com.github.apple.coremltools.conversion_date",)


def reproducible_package(package: Path) -> None:
    """Make a saved package a function of the model alone, so the same model gives byte-identical
    packages in any process on any day (bundles are checksummed and compared): the proto rewritten
    with protobuf's deterministic serialization (map entries in key order; coremltools writes them in
    hash order, which changes between processes), without the conversion date, and the manifest's
    random item identifiers replaced (`reproducible_manifest`)."""
    proto_path, _ = model_files(package)
    proto = load_proto(package)
    for key in UNREPRODUCIBLE_METADATA:
        proto.description.metadata.userDefined.pop(key, None)
    proto_path.write_bytes(proto.SerializeToString(deterministic=True))
    reproducible_manifest(package)


def reproducible_manifest(package: Path) -> None:
    """Replace the random item identifiers coremltools writes into Manifest.json with ids derived
    from each item's path, and write it with sorted keys."""
    manifest_path = Path(package) / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entries = manifest["itemInfoEntries"]
    new_ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"mvdeploy:{item['path']}"))
               for old, item in entries.items()}
    manifest["itemInfoEntries"] = {new_ids[old]: item for old, item in entries.items()}
    manifest["rootModelIdentifier"] = new_ids[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


# ---------------------------------------------------------------- the ML Program's ops

def dtype_name(code: int) -> str:
    """A MIL DataType code -> its short name ("fp16", "int4", ...)."""
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(code)
    if name not in DTYPES:
        raise ArtifactError(f"unsupported MIL data type {name}")
    return DTYPES[name][0]


def iter_ops(proto) -> Iterator:
    """The operation protos of the ML Program's `main` function; none for another kind of model."""
    if proto.WhichOneof("Type") != "mlProgram" or "main" not in proto.mlProgram.functions:
        return iter(())
    main = proto.mlProgram.functions["main"]
    return iter(main.block_specializations[main.opset].operations)


def op_types(proto) -> dict[str, set[str]]:
    """Op type -> the dtypes its outputs declare."""
    found: dict[str, set[str]] = {}
    for op in iter_ops(proto):
        dtypes = found.setdefault(op.type, set())
        for out in op.outputs:
            if out.type.WhichOneof("type") == "tensorType":
                dtypes.add(dtype_name(out.type.tensorType.dataType))
    return found


def palette_bits(proto) -> set[int]:
    """Bit widths of the palettized (constexpr_lut_to_dense) weights."""
    ops = list(iter_ops(proto))
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
            name = dtype_name(vtype.tensorType.dataType) if vtype is not None else ""
            bits.add(SUB_BYTE_BITS.get(name, 8))
    return bits


def _immediate_list(value) -> list:
    """An inline value (a tensor, or a list of scalars, of strings or integers) as a flat Python list."""
    if value.immediateValue.WhichOneof("value") == "list":
        return [item for element in value.immediateValue.list.values for item in _immediate_list(element)]
    tensor = value.immediateValue.tensor
    which = tensor.WhichOneof("value")
    if which == "strings":
        return list(tensor.strings.values)
    return [int(v) for v in getattr(tensor, which).values] if which else []


def classifier_labels(proto) -> list | None:
    """The class labels of a classifier ML Program (the `classes` of its classify op), else None."""
    ops = list(iter_ops(proto))
    producers = {out.name: op for op in ops for out in op.outputs}
    for op in ops:
        if op.type != "classify":
            continue
        binding = op.inputs["classes"].arguments[0]
        if binding.WhichOneof("binding") == "value":
            return _immediate_list(binding.value)
        return _immediate_list(producers[binding.name].attributes["val"])
    return None


# ---------------------------------------------------------------- describing inputs and outputs

def _feature_spec(feature, labels: list | None) -> TensorSpec:
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        shape = tuple(int(d) for d in array.shape)
        layout = Layout.nchw if len(shape) == 4 else None
        return TensorSpec(feature.name, shape, ARRAY_DTYPES.get(array.dataType, str(array.dataType)), layout)
    if kind == "imageType":
        image = feature.type.imageType
        channels = 1 if image.colorSpace == 10 else 3          # GRAYSCALE = 10
        return TensorSpec(feature.name, (1, channels, int(image.height), int(image.width)), "uint8", Layout.nchw)
    if kind == "dictionaryType":
        return TensorSpec(feature.name, (1, len(labels or ())), "float32")
    return TensorSpec(feature.name, (), kind or "unknown")


def describe_inputs(proto) -> tuple[TensorSpec, ...]:
    return tuple(_feature_spec(f, None) for f in proto.description.input)


def describe_outputs(proto) -> tuple[TensorSpec, ...]:
    """Float outputs first (what runners return), then a classifier's probabilities; labels dropped."""
    labels = classifier_labels(proto)
    described = [_feature_spec(f, labels) for f in proto.description.output]
    arrays = [d for d, f in zip(described, proto.description.output) if f.type.WhichOneof("Type") == "multiArrayType"]
    dicts = [d for d, f in zip(described, proto.description.output) if f.type.WhichOneof("Type") == "dictionaryType"]
    if not arrays and not dicts:
        raise ArtifactError("the model has no tensor or probability output")
    return tuple(arrays + dicts)


def is_image_input(feature) -> bool:
    """Whether an input feature is a Core ML image (pixels) rather than a multi-array."""
    return feature.type.WhichOneof("Type") == "imageType"


# ---------------------------------------------------------------- metadata mvdeploy writes

def stored_metadata(proto) -> dict[str, str]:
    """The user_defined_metadata of a package (mvdeploy's own keys start with META_PREFIX)."""
    return dict(proto.description.metadata.userDefined)


def stored_preprocess(proto, size: int) -> Preprocess | None:
    """The preprocessing mvdeploy stored for an image input (PREPROCESS_KEY), or None."""
    metadata = stored_metadata(proto)
    return Preprocess.from_dict(json.loads(metadata[PREPROCESS_KEY]), size) if PREPROCESS_KEY in metadata else None


# ---------------------------------------------------------------- precision of any package

PRECISION_RULES: tuple[tuple[Callable[[dict], bool], Precision], ...] = (
    (lambda f: "quantize" in f["ops"], Precision.w8a8),
    (lambda f: 6 in f["palette_bits"], Precision.palettize6),
    (lambda f: 4 in f["palette_bits"], Precision.palettize4),
    (lambda f: "int4" in f["dtypes"] or "uint4" in f["dtypes"], Precision.int4),
    (lambda f: bool({"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"} & f["ops"]), Precision.int8),
    (lambda f: "fp16" in f["dtypes"], Precision.fp16),
)


def infer_precision(proto) -> Precision:
    """The precision of a package mvdeploy did not write, from the ops and dtypes it declares.

    Palettes of other bit widths (1, 2, 3, 8) have no Precision of their own; such a package
    reports fp16 weights-wise and the first rule that fits.
    """
    ops = op_types(proto)
    facts = {"ops": set(ops), "dtypes": set().union(*ops.values()) if ops else set(),
             "palette_bits": palette_bits(proto)}
    for rule, precision in PRECISION_RULES:
        if rule(facts):
            return precision
    return Precision.fp32


def written_precision(proto) -> Precision:
    """The precision mvdeploy wrote into the package's metadata, else the one its ops suggest."""
    written = stored_metadata(proto).get(PRECISION_KEY)
    return Precision(written) if written in {p.value for p in Precision} else infer_precision(proto)
