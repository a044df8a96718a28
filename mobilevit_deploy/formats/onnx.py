"""The .onnx format: read a file's image input and outputs as TensorSpecs, and its weights for the audit."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, first_line
from ..parity.audit import StoredTensor, rounding_bound
from ..spec import TensorSpec, guess_layout


def _spec_of(value, is_input: bool) -> TensorSpec:
    dims = tuple(d.dim_value or 1 for d in value.type.tensor_type.shape.dim)
    return TensorSpec(value.name, dims, "float32", guess_layout(dims) if is_input else None)


def read_io(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of an ONNX graph: one image input [1, 3, H, W] or [1, H, W, 3] is required."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:
        raise ArtifactError(f"cannot read ONNX file {path}: {first_line(e)}") from None
    initializers = {i.name for i in graph.initializer}
    inputs = [_spec_of(i, True) for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ArtifactError(f"{path}: expected one image input [1, 3, H, W] or [1, H, W, 3], "
                            f"found {[t.shape for t in inputs]}")
    return tuple(inputs), tuple(_spec_of(o, False) for o in graph.output)


def with_intermediate_outputs(path: Path, out_path: Path) -> dict[str, tuple[str, str]]:
    """Write a copy of the graph whose outputs also list every value a node computes (for debugging:
    onnxruntime then returns intermediates by name). -> {value name: (node name, op type)} in graph
    order. The original file is not touched."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ArtifactError(f"cannot read ONNX file {path}: {first_line(e)}") from None
    graph = model.graph
    declared = {o.name for o in graph.output}
    producers: dict[str, tuple[str, str]] = {}
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        for value in node.output:
            if value:
                producers[value] = (node.name, node.op_type)
                if value not in declared:
                    graph.output.append(onnx.ValueInfoProto(name=value))
    try:
        onnx.save(model, str(out_path))
    except Exception as e:
        raise ArtifactError(f"cannot write a debug copy of {path}: {first_line(e)}") from None
    return producers


def stored_tensors(path: Path) -> list[StoredTensor]:
    """Every float initializer and float Constant node, with the rounding of its type as the bound
    (fp32: exact up to a converter's own float arithmetic; fp16: half a unit in the last place)."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:
        raise ArtifactError(f"cannot read ONNX file {path}: {first_line(e)}") from None
    tensors = list(graph.initializer) + [a.t for node in graph.node if node.op_type == "Constant"
                                         for a in node.attribute if a.name == "value"]
    out = []
    for tensor in tensors:
        values = numpy_helper.to_array(tensor)
        if values.dtype not in (np.float32, np.float16):
            continue
        out.append(StoredTensor(tensor.name, values.astype(np.float64), rounding_bound(values), str(values.dtype)))
    return out
