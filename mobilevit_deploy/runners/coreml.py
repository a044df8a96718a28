"""Run a Core ML .mlpackage: Apple's runtime on macOS, the MIL reference interpreter elsewhere.

coremltools 9.0 converts on Linux but cannot load or predict there, so off macOS the runner
executes the saved ML Program with `mobilevit_deploy.mil` (numpy, fp16 ops rounded to fp16).
That checks the converted graph and its weights; it does not check Apple's CPU/GPU/Neural Engine
kernels, and `engine` says so.

The feed is the canonical one (float32 [1, 3, H, W], preprocessed). An image input gets it turned
back into pixels (Preprocess.to_pixels) with the mean/std mvdeploy stored in the model's metadata;
a classifier returns its float `logits` output when it has one, else its probabilities in label order.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ArtifactError, TargetUnavailableError
from ..formats.mlpackage import PREPROCESS_KEY, classifier_labels, is_image_input, load_proto, stored_preprocess
from .base import Runner

COMPUTE_UNITS = ("cpu_only", "all")
INTERPRETER_ENGINE = ("mvdeploy MIL reference interpreter (numpy; fp16 ops rounded to fp16): checks the converted "
                      "graph and weights, not Apple's CPU/GPU/Neural Engine kernels")
NOT_A_PHONE = "not measurable here (no Core ML runtime off macOS; the reference interpreter is not a phone)"


class _AppleRuntime:
    """coremltools' MLModel on macOS."""

    def __init__(self, path: Path, compute_units: str):
        import coremltools as ct

        units = {"cpu_only": ct.ComputeUnit.CPU_ONLY, "all": ct.ComputeUnit.ALL}[compute_units]
        try:
            self.model = ct.models.MLModel(str(path), compute_units=units)
        except Exception as e:
            raise ArtifactError(f"Core ML could not load {path}: {e}") from e
        self.engine = f"Core ML runtime (coremltools {ct.__version__}, macOS {_mac_version()}, {compute_units})"
        self.takes_pixels_as = "PIL image (pixels rounded to uint8)"

    def predict(self, feed: dict) -> dict:
        return self.model.predict(feed)


class _ReferenceInterpreter:
    def __init__(self, path: Path, compute_units: str):
        from ..mil import Interpreter

        self.interpreter = Interpreter.from_package(path)
        self.engine = INTERPRETER_ENGINE
        self.takes_pixels_as = "float32 pixels (not rounded)"

    def predict(self, feed: dict) -> dict:
        return self.interpreter.run(feed)


def _mac_version() -> str:
    import platform

    return platform.mac_ver()[0] or "?"


def _pil_image(pixels: np.ndarray):
    from PIL import Image

    hwc = np.clip(np.rint(pixels[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
    return Image.fromarray(hwc if hwc.shape[2] == 3 else hwc[:, :, 0])


class CoreMLRunner(Runner):
    """engine options: compute_units ("all" | "cpu_only", Apple's runtime only); use_apple_runtime
    (default: on macOS) to force one backend."""

    name = "coreml"

    def __init__(self, artifact, *, compute_units: str = "all", use_apple_runtime: bool | None = None,
                 num_threads: int | None = None):
        """num_threads: accepted like every runner's; Core ML and the interpreter choose their own threads."""
        if compute_units not in COMPUTE_UNITS:
            raise ArtifactError(f"compute units '{compute_units}' (known: {', '.join(COMPUTE_UNITS)})")
        self.path = Path(artifact.path)
        if len(artifact.inputs) != 1:
            raise ArtifactError(f"{self.path.name}: {len(artifact.inputs)} inputs; the runner feeds exactly one image tensor")
        super().__init__(artifact)
        self.input_name = artifact.inputs[0].name
        self.compute_units = compute_units
        self.use_apple_runtime = sys.platform == "darwin" if use_apple_runtime is None else use_apple_runtime
        self.latency_unmeasurable = None if self.use_apple_runtime else NOT_A_PHONE
        self.image_input = False
        self._backend = None
        self._to_model: Callable[[np.ndarray], object] | None = None
        self._from_model: Callable[[dict], np.ndarray] | None = None

    @property
    def engine(self) -> str:
        if self._backend is None:
            return "coreml (not loaded)"
        if self.image_input:
            return f"{self._backend.engine}; image input fed as {self._backend.takes_pixels_as}"
        return self._backend.engine

    def _open(self) -> None:
        if self.use_apple_runtime and sys.platform != "darwin":
            raise TargetUnavailableError("the Core ML runtime runs only on macOS; use the reference interpreter here")
        proto = load_proto(self.path)
        self.image_input = is_image_input(proto.description.input[0])
        backend = _AppleRuntime if self.use_apple_runtime else _ReferenceInterpreter
        self._backend = backend(self.path, self.compute_units)
        self._to_model = self._feed_adapter(proto)
        self._from_model = self._output_adapter(proto)

    def _close(self) -> None:
        self._backend = None

    def _feed_adapter(self, proto) -> Callable[[np.ndarray], object]:
        if not self.image_input:
            return lambda x: x
        preprocess = stored_preprocess(proto, self.input_shape[2])
        if preprocess is None:
            raise ArtifactError(
                f"{self.path.name}: image input without '{PREPROCESS_KEY}' metadata, so the canonical "
                "(normalized) feed cannot be mapped back to pixels"
            )
        return (lambda x: _pil_image(preprocess.to_pixels(x))) if self.use_apple_runtime else preprocess.to_pixels

    def _output_adapter(self, proto) -> Callable[[dict], np.ndarray]:
        outputs = list(proto.description.output)
        arrays = [o.name for o in outputs if o.type.WhichOneof("Type") == "multiArrayType"]
        if arrays:
            name = arrays[0]
            return lambda result: np.asarray(result[name], dtype=np.float32).reshape(1, -1)
        probabilities = [o.name for o in outputs if o.type.WhichOneof("Type") == "dictionaryType"]
        labels = classifier_labels(proto)
        if not probabilities or labels is None:
            raise ArtifactError(f"{self.path.name}: no float tensor output and no classifier probabilities")
        name = probabilities[0]
        return lambda result: np.asarray([[result[name][label] for label in labels]], dtype=np.float32)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        result = self._backend.predict({self.input_name: self._to_model(x)})
        return self._from_model(result)

    # -- debugging (reference interpreter only) --------------------------------------------------

    def _interpreter(self):
        self._require_active()
        if not isinstance(self._backend, _ReferenceInterpreter):
            raise ArtifactError("intermediate values come from the reference interpreter; "
                                "open the runner with use_apple_runtime=False")
        return self._backend.interpreter

    def program_values(self) -> list[tuple[str, str, tuple[int, ...] | None]]:
        """Every tensor an op of the program computes, in execution order: (name, op type, declared
        shape, None when not fully known)."""
        out = []
        for op in self._interpreter().steps:
            for var in op.outputs:
                shape = var.type.shape
                known = var.type.kind == "tensor" and shape is not None and all(d is not None for d in shape)
                out.append((var.name, op.type, tuple(shape) if known else None))
        return out

    def _infer_intermediates(self, x: np.ndarray, names: list[str]) -> dict[str, object]:
        """The op results asked for, by name (reference interpreter only)."""
        values = self._interpreter().run({self.input_name: self._to_model(x)}, keep=set(names))
        return {name: values[name] for name in names}
