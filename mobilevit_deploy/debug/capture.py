"""Intermediate values: PyTorch modules through forward hooks, artifacts through their engines.

Every engine capture works in two steps, so only the tensors the alignment picked are fetched:
`tensors()` describes what the engine can return (name, shape, order, scope), `values(keys, images)`
returns those tensors for each image, stacked [N, ...], float32 (int8 tensors dequantized), through
the runner's `infer_intermediates`. A target names the capture of its engine in its `intermediates`
attribute (None: debug cannot reach its intermediate tensors); this module names no target.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError
from ..spec import Artifact
from .align import ArtifactTensor, ModuleOutput, onnx_scope, tflite_scope


# -- PyTorch -----------------------------------------------------------------------------------

def capture_torch(model: nn.Module, images: np.ndarray) -> tuple[list[ModuleOutput], dict[str, np.ndarray]]:
    """Every module called exactly once per image with one tensor output: its description (network
    order = completion order) and its outputs [N, ...]. Batch 1 per image, as the artifacts run."""
    names = {module: name for name, module in model.named_modules()}
    leaves = {name for name, module in model.named_modules() if not any(True for _ in module.children())}
    per_image: list[dict[str, np.ndarray]] = []
    described: dict[str, ModuleOutput] = {}
    for index in range(len(images)):
        calls: dict[str, list] = {}
        alive: list[torch.Tensor] = []         # keeps tensors alive so identity keys stay unique
        by_identity: dict[tuple, str] = {}
        order: list[str] = []

        def hook(module, _inputs, output):
            name = names[module]
            same_as = None
            if isinstance(output, torch.Tensor):
                alive.append(output)
                key = (output.data_ptr(), tuple(output.shape), tuple(output.stride()))
                same_as = by_identity.setdefault(key, name)
            calls.setdefault(name, []).append((output, None if same_as == name else same_as))
            order.append(name)

        handles = [module.register_forward_hook(hook) for module in names if names[module]]
        try:
            with torch.no_grad():
                model(torch.from_numpy(np.ascontiguousarray(images[index:index + 1])))
        finally:
            for handle in handles:
                handle.remove()
        kept = {}
        for position, name in enumerate(order):
            if len(calls[name]) != 1:
                continue                        # called more than once: which call would the artifact show?
            output, same_as = calls[name][0]
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                continue                        # not one float tensor: nothing to compare
            kept[name] = output.detach().float().numpy().copy()
            if index == 0:
                described[name] = ModuleOutput(name, type(model.get_submodule(name)).__name__, position,
                                               tuple(output.shape), name in leaves, same_as)
        per_image.append(kept)
    modules = [m for m in sorted(described.values(), key=lambda m: m.order) if all(m.name in p for p in per_image)]
    return modules, {m.name: np.stack([p[m.name] for p in per_image]) for m in modules}


# -- engines -----------------------------------------------------------------------------------

class _OpenOnce:
    """A capture whose engine loads once, for describing and for fetching: use it in a `with` block."""

    runner = None

    def __enter__(self):
        if self.runner is not None:
            self.runner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.runner is not None:
            self.runner.__exit__(*exc)


class OnnxCapture(_OpenOnce):
    """onnxruntime on a copy of the file whose graph outputs include every intermediate value."""

    nhwc_first = False

    def __init__(self, artifact: Artifact, module_names: set[str], workdir: Path):
        from ..formats.onnx import with_intermediate_outputs

        self.artifact = artifact
        self.copy = Path(workdir) / Path(artifact.path).name
        self.producers = with_intermediate_outputs(Path(artifact.path), self.copy)   # value -> (node, op)
        self.module_names = module_names

    def tensors(self, first_image: np.ndarray) -> list[ArtifactTensor]:
        values = self._run(first_image[None], list(self.producers))[0]
        out = []
        for order, (value, (node, op)) in enumerate(self.producers.items()):
            array = values.get(value)
            if array is None or not np.issubdtype(array.dtype, np.floating):
                continue
            out.append(ArtifactTensor(value, value, order, tuple(array.shape),
                                      onnx_scope(node, self.module_names), op))
        return out

    def values(self, keys: list, images: np.ndarray) -> dict:
        runs = self._run(images, list(keys))
        return {k: np.stack([r[k] for r in runs]).astype(np.float32) for k in keys}

    def _run(self, images: np.ndarray, names: list[str]) -> list[dict[str, np.ndarray]]:
        from ..runners.onnxruntime import OnnxRuntimeRunner

        with OnnxRuntimeRunner(replace(self.artifact, path=self.copy)) as runner:
            return [runner.infer_intermediates(images[i:i + 1], names) for i in range(len(images))]

    @property
    def engine(self) -> str:
        from ..runners.onnxruntime import OnnxRuntimeRunner
        return OnnxRuntimeRunner(self.artifact).engine + ", intermediates as graph outputs"


class LiteRTCapture(_OpenOnce):
    """The LiteRT interpreter with every tensor preserved (reference kernels, in its worker)."""

    nhwc_first = True        # litert-torch keeps 4-D activations NHWC: a [1, C, C, C] tensor is NHWC

    def __init__(self, artifact: Artifact, module_names: set[str], workdir: Path):
        from ..runners.litert import LiteRTRunner

        self.runner = LiteRTRunner(artifact, preserve_all_tensors=True)
        self.module_names = module_names
        self.details: dict[int, dict] = {}

    def tensors(self, first_image: np.ndarray) -> list[ArtifactTensor]:
        runner = self.runner
        details = {d["index"]: d for d in runner.tensor_details()}
        ops = runner.op_details()
        outputs = {int(o["index"]) for o in runner.outputs}
        scope_of = {i: tflite_scope(d["name"], self.module_names) for i, d in details.items()}
        consumers: dict[int, set] = {}
        for op in ops:
            op_scope = scope_of.get(op["outputs"][0]) if op["outputs"] else None
            for i in op["inputs"]:
                consumers.setdefault(i, set()).add(op_scope)
        out = []
        for op in ops:
            for i in op["outputs"]:
                d = details[i]
                if not d["shape"] or scope_of[i] is None:
                    continue
                self.details[i] = d
                used_by = consumers.get(i, set()) | ({None} if i in outputs else set())
                out.append(ArtifactTensor(i, d["name"], len(out), tuple(d["shape"]), scope_of[i], op["op_name"],
                                          frozenset(used_by)))
        return out

    def values(self, keys: list, images: np.ndarray) -> dict:
        per_key: dict = {k: [] for k in keys}
        for i in range(len(images)):
            for k, value in self.runner.infer_intermediates(images[i:i + 1], keys).items():
                per_key[k].append(_dequantized(value, self.details[k]))
        return {k: np.stack(v) for k, v in per_key.items()}

    @property
    def engine(self) -> str:
        return self.runner.engine + ", all tensors preserved"


class CoreMLCapture(_OpenOnce):
    """The ML Program reference interpreter, keeping every op's result."""

    nhwc_first = False

    def __init__(self, artifact: Artifact, module_names: set[str], workdir: Path):
        from ..runners.coreml import CoreMLRunner

        self.runner = CoreMLRunner(artifact, use_apple_runtime=False)

    def tensors(self, first_image: np.ndarray) -> list[ArtifactTensor]:
        steps = self.runner.program_values()
        return [ArtifactTensor(name, name, order, shape, None, op) for order, (name, op, shape) in enumerate(steps)
                if shape is not None]

    def values(self, keys: list, images: np.ndarray) -> dict:
        runs = [self.runner.infer_intermediates(images[i:i + 1], keys) for i in range(len(images))]
        return {k: np.stack([np.asarray(r[k], dtype=np.float32) for r in runs]) for k in keys}

    @property
    def engine(self) -> str:
        from ..runners.coreml import INTERPRETER_ENGINE
        return INTERPRETER_ENGINE + ", every op's result kept"


class ExecuTorchCapture(_OpenOnce):
    """The ExecuTorch runtime on a copy of the file whose XNNPACK delegates hand out every value they
    compute as an extra output (formats/pte_expose.py: same operators, weights and scales). An exposed
    value stops XNNPACK fusing across it, so the copy is trusted only if its logits equal the file's."""

    nhwc_first = True        # XNNPACK keeps 4-D activations NHWC after the input's transpose

    def __init__(self, artifact: Artifact, module_names: set[str], workdir: Path):
        from ..formats.pte_expose import expose_intermediates
        from ..runners.executorch import ExecuTorchRunner

        self.artifact = artifact
        copy = Path(workdir) / Path(artifact.path).name
        self.values_in_order = expose_intermediates(Path(artifact.path), copy)
        self.exposed = {v.output: v for v in self.values_in_order if v.output is not None}
        self.runner = ExecuTorchRunner(replace(artifact, path=copy))

    def tensors(self, first_image: np.ndarray) -> list[ArtifactTensor]:
        from ..runners.executorch import ExecuTorchRunner

        with ExecuTorchRunner(self.artifact) as shipped:
            expected = shipped.infer(first_image[None])
        if not np.array_equal(self.runner.infer(first_image[None]), expected):
            raise ArtifactError(f"{self.artifact.path}: with its XNNPACK values exposed the program computes "
                                "other logits, so its intermediate values would not be the shipped file's")
        # a delegate's own outputs are listed too (key None: not fetchable), so that matching by kind and order
        # never passes over the op that computes a module's output to take a later one of the same kind
        return [ArtifactTensor(v.output, f"delegate call {v.call}, node {v.node} {v.op}", order, v.shape, None, v.op)
                for order, v in enumerate(self.values_in_order)]

    def values(self, keys: list, images: np.ndarray) -> dict:
        per_key: dict = {k: [] for k in keys}
        for i in range(len(images)):
            for k, value in self.runner.infer_intermediates(images[i:i + 1], keys).items():
                exposed = self.exposed[k]
                per_key[k].append(_dequantized(value, {"scale": exposed.scale, "zero_point": exposed.zero_point}))
        return {k: np.stack(v) for k, v in per_key.items()}

    @property
    def engine(self) -> str:
        return self.runner.engine + ", XNNPACK values exposed as outputs"


def engine_capture(target, artifact: Artifact, module_names: set[str], workdir: Path):
    """The capture `target` declares in its `intermediates` attribute, opened on `artifact`."""
    capture = getattr(target, "intermediates", None)
    if capture is None:
        from ..targets import registry

        able = [t.name for t in registry().values() if getattr(t, "intermediates", None) is not None]
        raise ArtifactError(f"debug cannot expose intermediates of {target.name} files "
                            f"(it can for: {', '.join(able)})")
    return capture(artifact, module_names, workdir)


def _dequantized(value: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(value.dtype, np.integer) and detail.get("scale"):
        return ((value.astype(np.float32) - detail.get("zero_point", 0)) * detail["scale"]).astype(np.float32)
    return value.astype(np.float32)


def workspace() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="mvdeploy-debug-")
