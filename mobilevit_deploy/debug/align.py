"""Which artifact tensor is which PyTorch module's output: pure Python over names, shapes and order.

Three ways, tried in this order, and every mapping says which one made it:
- "name": the converter carried the module path into the artifact (ONNX node names from the
  TorchScript exporter, `/stages/stages.2/stages.2.1/conv_kxk/conv/Conv`; litert-torch tensor names,
  `...Sequential_stages/...Sequential_2/...MobileViTBlock_1/...`). The module's output is the last
  tensor (in execution order) produced inside its scope whose shape fits the module's output.
- "matched": no name, so a leaf module (Conv2d, Linear, LayerNorm, ...) is paired with the next
  artifact op of its kind whose shape fits, moving forward only (order and shape along the graph);
  a container whose PyTorch output *is* a mapped child's output tensor takes that child's tensor.
- "unmapped": neither applies. Nothing is guessed beyond these rules.

A shape fits when it is the module's, the module's NCHW shape stored NHWC (TFLite), or the same
values with size-1 axes dropped or added.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NAME, MATCHED, UNMAPPED = "name", "matched", "unmapped"

# PyTorch leaf module class -> the op types (ONNX, MIL, TFLite and XNNPACK spellings) that compute its output.
LEAF_OPS: dict[str, frozenset[str]] = {
    "Conv2d": frozenset({"Conv", "conv", "CONV_2D", "DEPTHWISE_CONV_2D", "XNNConv2d", "XNNDepthwiseConv2d"}),
    "Linear": frozenset({"Gemm", "MatMul", "linear", "matmul", "FULLY_CONNECTED", "BATCH_MATMUL", "XNNFullyConnected"}),
    "LayerNorm": frozenset({"LayerNormalization", "layer_norm"}),
    "BatchNorm2d": frozenset({"BatchNormalization", "batch_norm"}),
    "GELU": frozenset({"Gelu", "gelu", "GELU"}),
    "SiLU": frozenset({"silu"}),
    "ReLU": frozenset({"Relu", "relu", "RELU"}),
    "Softmax": frozenset({"Softmax", "softmax", "SOFTMAX", "XNNSoftmax"}),
}


@dataclass(frozen=True)
class ArtifactTensor:
    """One intermediate value an engine can hand back, described before any value is fetched."""

    key: object                  # what the engine needs to fetch it (a tensor name or index)
    name: str                    # as the artifact spells it
    order: int                   # position in execution order
    shape: tuple[int, ...]
    scope: str | None = None     # the PyTorch module (qualified name) the name points to, if any
    op_type: str | None = None   # the op that produced it, when the engine says
    used_by: frozenset | None = None  # scopes of the ops that read it (None in it: a graph output);
                                      # None: the engine does not say


@dataclass(frozen=True)
class ModuleOutput:
    """One PyTorch module's output as the hooks saw it (one call per image)."""

    name: str                    # qualified name, as in named_modules()
    kind: str                    # class name
    order: int                   # completion order in the forward pass (network order)
    shape: tuple[int, ...]
    is_leaf: bool
    same_as: str | None = None   # an earlier module whose output tensor this very tensor is


@dataclass(frozen=True)
class Mapping:
    module: str
    tensor: ArtifactTensor | None
    method: str                  # NAME, MATCHED or UNMAPPED
    layout: str = "same"         # "same", "nhwc" (transpose to NCHW before comparing) or "reshape"


def fit(artifact_shape: tuple[int, ...], module_shape: tuple[int, ...], nhwc_first: bool = False,
        merged_axes: bool = False) -> str | None:
    """How an artifact tensor's shape relates to a module output's, or None when it cannot be it.
    nhwc_first: the engine keeps 4-D activations NHWC, so a shape that reads both ways is NHWC.
    merged_axes: also accept leading axes split or merged (same last axis, same size); only where
    the op kind already says the tensor is the module's (a TFLite FULLY_CONNECTED over windows)."""
    a, m = tuple(artifact_shape), tuple(module_shape)
    nhwc = len(a) == 4 and len(m) == 4 and a == (m[0], m[2], m[3], m[1])
    if nhwc and nhwc_first:
        return "nhwc"
    if a == m:
        return "same"
    if nhwc:
        return "nhwc"
    if a and tuple(d for d in a if d != 1) == tuple(d for d in m if d != 1):
        return "reshape"
    if merged_axes and a and m and a[-1] == m[-1] and _numel(a) == _numel(m) and len(m) != 4:
        return "reshape"
    return None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# -- names the converters carry ----------------------------------------------------------------

def onnx_scope(node_name: str, modules: set[str]) -> str | None:
    """`/stages/stages.2/stages.2.1/conv_kxk/act/Mul` -> `stages.2.1.conv_kxk.act` (when that module
    exists). The TorchScript exporter writes one segment per module, a child of a container as
    `<container>.<index>`; the last segment is the op."""
    segments = [s for s in node_name.split("/") if s][:-1]
    if not segments:
        return None
    parts: list[str] = []
    previous = None
    for segment in segments:
        if previous is not None and segment.startswith(previous + "."):
            parts.append(segment[len(previous) + 1:])
        else:
            parts.append(segment)
        previous = segment
    name = ".".join(parts)
    return name if name in modules else None


_LOCATION_SUFFIX = re.compile(r";\d*$")


def tflite_scope(tensor_name: str, modules: set[str]) -> str | None:
    """`pkg.MobileViT/torch...Sequential_stages/torch...Sequential_2/pkg.MobileViTBlock_1;5` ->
    `stages.2.1`. litert-torch writes `<class path>_<attribute>` per module after the root; when a
    value fuses several locations (`a;;b`), the first one is the value's own."""
    first = tensor_name.split(";")[0]
    first = _LOCATION_SUFFIX.sub("", first)
    segments = first.split("/")
    if len(segments) < 2 or "." not in segments[0]:
        return None
    name = ""
    for segment in segments[1:]:
        leaf = segment.rsplit(".", 1)[-1]                     # "Sequential_stages", "FusedConvAct_conv1_1x1"
        attribute = _attribute(leaf, name, modules)
        if attribute is None:
            return None
        name = f"{name}.{attribute}" if name else attribute
    return name or None


def _attribute(leaf: str, parent: str, modules: set[str]) -> str | None:
    """The attribute part of `<Class>_<attribute>`: the split that names an existing child."""
    for i, ch in enumerate(leaf):
        if ch == "_":
            attribute = leaf[i + 1:]
            if (f"{parent}.{attribute}" if parent else attribute) in modules:
                return attribute
    return None


# -- the alignment -----------------------------------------------------------------------------

def _inside(scope: str | None, module: str) -> bool:
    return scope is not None and (scope == module or scope.startswith(module + "."))


def _leaves_scope(t: ArtifactTensor, module: str) -> bool:
    """Is `t` read outside `module` (or a graph output)? Unknown readers count as yes. A value the
    module keeps to itself (a LayerNorm before its scale, folded into the next op) is not its output."""
    return t.used_by is None or any(not _inside(scope, module) for scope in t.used_by)


def align(modules: list[ModuleOutput], tensors: list[ArtifactTensor], nhwc_first: bool = False) -> list[Mapping]:
    """One Mapping per module, in network order (see the module docstring for the rules)."""
    tensors = sorted(tensors, key=lambda t: t.order)
    found: dict[str, Mapping] = {}
    for m in modules:                                      # 1. names carried through
        best = None
        for t in tensors:
            if _inside(t.scope, m.name) and _leaves_scope(t, m.name):
                how = fit(t.shape, m.shape, nhwc_first)
                if how is not None:
                    best = Mapping(m.name, t, NAME, how)
        if best is not None:
            found[m.name] = best

    # 2. leaves by op kind, shape and order: after the last leaf mapped so far, before the next leaf
    # mapped by name (so a leaf whose op is missing cannot take a later module's op)
    named_leaf_orders = [(i, found[m.name].tensor.order) for i, m in enumerate(modules)
                         if m.is_leaf and m.name in found]
    position = -1
    for index, m in enumerate(modules):
        if m.name in found:
            if found[m.name].method == NAME and m.is_leaf:
                position = max(position, found[m.name].tensor.order)
            continue
        ops = LEAF_OPS.get(m.kind) if m.is_leaf else None
        if not ops:
            continue
        limit = next((order for i, order in named_leaf_orders if i > index), float("inf"))
        for t in tensors:
            how = fit(t.shape, m.shape, nhwc_first, merged_axes=True) if t.op_type in ops else None
            if position < t.order < limit and how is not None:
                found[m.name] = Mapping(m.name, t, MATCHED, how)
                position = t.order
                break

    for m in modules:                                      # 3. containers returning a child's tensor
        if m.name not in found and m.same_as in found:
            source = found[m.same_as]
            found[m.name] = Mapping(m.name, source.tensor, MATCHED, source.layout)
    return [found.get(m.name, Mapping(m.name, None, UNMAPPED)) for m in modules]


def counts(mappings: list[Mapping]) -> dict[str, int]:
    out = {NAME: 0, MATCHED: 0, UNMAPPED: 0}
    for m in mappings:
        out[m.method] += 1
    return out
