"""Per-layer int8 error: where quantization hurts, and which float fallbacks would help most.

A PT2E int8 conversion (TFLite's, through litert-torch) quantizes the model with torchao's PT2E flow
and the target's quantizer, then lowers that graph. This module runs the same quantized graph
(quantize/dequantize ops in PyTorch) beside the float graph on the evaluation images and compares
every layer's output. The quantizer comes from the target (its `layer_quantizer()`), so this module
imports no target's toolchain. Graph
nodes keep the PyTorch module they came from (`nn_module_stack`), so each figure names a module of
the model. It measures the quantization itself, not the TFLite kernels; the artifact's own logits
are measured separately in the report.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, fx, nn

from ..parity.compare import noise_added, sqnr_from_power

# Leaf modules that only finish their parent's work: their nodes are reported under the parent.
MERGED_SUFFIXES = (".act",)


@dataclass
class LayerError:
    module: str          # the PyTorch module whose output this is
    op: str              # the last graph op of that module
    sqnr_db: float       # float vs quantized output of the module, over the evaluation images
    noise_added: float   # relative noise power (noise / signal) this layer adds over the previous layer's
    quantized: bool      # the module reads int8 values (some ops, e.g. LayerNorm, stay float)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FallbackGain:
    module: str
    logits_sqnr_db: float     # the whole model's logits with this module left in float
    gain_db: float            # against the fully quantized model

    def to_dict(self) -> dict:
        return asdict(self)


def quantize_graph(model: nn.Module, example: Tensor, calibration: list[Tensor], quantizer) -> fx.GraphModule:
    """The PT2E int8 graph of `model` as `quantizer` (a target's `layer_quantizer()`) makes it,
    calibrated on images."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    observed = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    with torch.no_grad():
        for image in calibration:
            observed(image.unsqueeze(0))
    return convert_pt2e(observed, fold_quantize=False)


def _module_of(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    for suffix in MERGED_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return path.removeprefix("L['self'].").removeprefix("L__self__.") or None


def layer_outputs(graph: fx.GraphModule) -> dict[str, fx.Node]:
    """module path -> the node that produces the module's output (its last compute node)."""
    last: dict[str, fx.Node] = {}
    for node in graph.graph.nodes:
        if node.op != "call_function" or "quantize" in str(node.target):
            continue
        module = _module_of(node)
        if module:
            last.pop(module, None)          # re-insert: dict order becomes the order of last appearance
            last[module] = node
    return last


class _Recorder(fx.Interpreter):
    def __init__(self, graph: fx.GraphModule, names: set[str]):
        super().__init__(graph)
        self.names, self.values = names, {}

    def run_node(self, node):
        out = super().run_node(node)
        if node.name in self.names and isinstance(out, Tensor):
            self.values[node.name] = out.detach().double()
        return out


def layer_errors(float_graph: fx.GraphModule, quant_graph: fx.GraphModule, images: list[Tensor]) -> list[LayerError]:
    """Every layer's output SQNR (float vs int8) over `images`, in execution order."""
    outputs = layer_outputs(float_graph)
    quant_nodes = {n.name for n in quant_graph.graph.nodes}
    outputs = {m: n for m, n in outputs.items() if n.name in quant_nodes}
    names = {n.name for n in outputs.values()}
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    with torch.no_grad():
        for image in images:
            f, q = _Recorder(float_graph, names), _Recorder(quant_graph, names)
            f.run(image.unsqueeze(0))
            q.run(image.unsqueeze(0))
            for name in names:
                if name in f.values and name in q.values and f.values[name].shape == q.values[name].shape:
                    signal[name] += float((f.values[name] ** 2).sum())
                    noise[name] += float(((f.values[name] - q.values[name]) ** 2).sum())
    quantized = _quantized_modules(quant_graph)
    sqnrs = [sqnr_from_power(signal[node.name], noise[node.name]) for node in outputs.values()]
    return [LayerError(module, str(node.target).split(".")[1] if "." in str(node.target) else str(node.target),
                       sqnr, added, module in quantized)
            for (module, node), sqnr, added in zip(outputs.items(), sqnrs, noise_added(sqnrs))]


def _quantized_modules(quant_graph: fx.GraphModule) -> set[str]:
    """Modules with an op that reads a dequantized value: the ones int8 actually touches."""
    out = set()
    for node in quant_graph.graph.nodes:
        if node.op == "call_function" and "dequantize" in str(node.target):
            out.update(m for m in (_module_of(u) for u in node.users if "quantize" not in str(u.target)) if m)
    return out


def logits_sqnr(float_graph: fx.GraphModule, quant_graph: fx.GraphModule, images: list[Tensor]) -> float:
    with torch.no_grad():
        f = torch.cat([float_graph(i.unsqueeze(0)) for i in images]).double()
        q = torch.cat([quant_graph(i.unsqueeze(0)) for i in images]).double()
    return sqnr_from_power(float((f ** 2).sum()), float(((f - q) ** 2).sum()))


def with_float_module(quant_graph: fx.GraphModule, module: str) -> fx.GraphModule:
    """The int8 graph with one module computing in float: its ops read the float values behind their
    quantize/dequantize pairs (weights and inputs); its output is still quantized for the next op, as
    in a mixed TFLite graph. (A PT2E quantizer such as litert-torch's cannot leave one module out, so
    this is done on the converted graph.)"""
    graph = copy.deepcopy(quant_graph)
    for dq in list(graph.graph.nodes):
        q = dq.args[0] if dq.op == "call_function" and "dequantize" in str(dq.target) and dq.args else None
        if not (isinstance(q, fx.Node) and "quantize" in str(q.target) and "dequantize" not in str(q.target)):
            continue
        for user in list(dq.users):
            if _module_of(user) == module:
                user.replace_input_with(dq, q.args[0])
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def fallback_gains(quant_graph: fx.GraphModule, images: list[Tensor], candidates: list[str],
                   float_graph: fx.GraphModule, baseline_db: float) -> list[FallbackGain]:
    """The logits' SQNR gain of leaving each candidate module in float."""
    gains = []
    for module in candidates:
        sqnr = logits_sqnr(float_graph, with_float_module(quant_graph, module), images)
        gains.append(FallbackGain(module, sqnr, sqnr - baseline_db))
    return sorted(gains, key=lambda g: -g.gain_db)


@dataclass
class LayerAnalysis:
    layers: list[LayerError]
    logits_sqnr_db: float
    fallbacks: list[FallbackGain]
    images: int
    calibration_images: int
    method: str          # how the figures were measured, naming the quantizer

    def to_dict(self) -> dict:
        return {"layers": [l.to_dict() for l in self.layers], "logits_sqnr_db": self.logits_sqnr_db,
                "fallbacks": [f.to_dict() for f in self.fallbacks], "images": self.images,
                "calibration_images": self.calibration_images, "method": self.method}


def analyze(model: nn.Module, image_size: int, calibration: list[Tensor], images: list[Tensor], quantizer,
            candidates: int = 3, made_by: str = "the target's int8 quantizer") -> LayerAnalysis:
    """Per-layer SQNR of the int8 model `quantizer` makes, and the measured gain of leaving each of the
    worst `candidates` quantized layers (by noise added) in float. `made_by` names the quantizer in
    the analysis' method line."""
    example = torch.zeros(1, 3, image_size, image_size)
    float_graph = torch.export.export(model.eval(), (example,)).module()
    quant_graph = quantize_graph(model, example, calibration, quantizer)
    layers = layer_errors(float_graph, quant_graph, images)
    baseline = logits_sqnr(float_graph, quant_graph, images)
    worst = [l.module for l in sorted((l for l in layers if l.quantized), key=lambda l: -l.noise_added)[:candidates]]
    method = (f"PT2E view: the plain PT2E int8 graph ({made_by}) run in PyTorch beside the float graph, not the "
              "recipe a file ships (the per-file tables are measured in the files); SQNR of each module's output "
              "over the evaluation images")
    return LayerAnalysis(layers, baseline, fallback_gains(quant_graph, images, worst, float_graph, baseline),
                         len(images), len(calibration), method)
