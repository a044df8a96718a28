"""One interface for every engine that can run a model: torch, onnxruntime, LiteRT, Core ML.

Every runner is built the same way, `Runner(artifact, **engine_options)`, and used in a `with` block:
`__enter__` loads (`_open`), `__exit__` releases (`_close`), `infer()` validates the feed and calls
`_infer()` one sample at a time. Outside its `with` block a runner raises RunnerStateError.
A runner whose engine can return intermediate tensors (for `mvdeploy debug`) implements
`_infer_intermediates()` behind `infer_intermediates(x, names) -> {name: value}`.

The feed is always the canonical layout: float32 images [N, 3, H, W], preprocessed. Each runner
owns its own layout (NHWC for TFLite) and integer I/O, so comparisons see one layout.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import os
from typing import Any

import numpy as np

from ..errors import ArtifactError, RunnerStateError
from .timing import time_calls


THREADS_VARIABLE = "MVDEPLOY_THREADS"
DEFAULT_THREADS = 2             # a phone's big cores run a model on two or more; so does parity here


def engine_threads() -> int:
    """The threads an engine runs on unless told otherwise: $MVDEPLOY_THREADS, else 2. Set it to 1 where
    several engines share few cores (a CI runner, parallel test workers): pools that spin while they wait
    for each other then cost more CPU than they save."""
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_THREADS
    if not value.isdigit() or int(value) < 1:
        from ..errors import InvalidValueError
        raise InvalidValueError(f"{THREADS_VARIABLE} must be a whole number of at least 1; got {value!r}")
    return int(value)


class Runner(ABC):
    name: str = "runner"
    # None when latency measured with this runner says something about the target's speed; else why not
    # (e.g. Core ML on Linux runs a reference interpreter, not Apple's kernels).
    latency_unmeasurable: str | None = None

    def __init__(self, artifact: Any, *, input_shape: tuple[int, int, int, int] | None = None):
        self.artifact = artifact
        if input_shape is None:
            image = artifact.inputs[0]
            if len(image.shape) != 4:
                raise ArtifactError(f"{getattr(artifact, 'path', artifact)}: expected one image input "
                                    f"[1, 3, H, W] or [1, H, W, 3], got {image.shape}")
            input_shape = image.canonical_shape
        self.input_shape = tuple(input_shape)      # canonical [1, 3, H, W]
        self._active = False

    @property
    def engine(self) -> str:
        """What actually ran, with its version, for reports (e.g. 'onnxruntime 1.23.2 CPU')."""
        return self.name

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "Runner":
        self._open()
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._active = False
        self._close()

    def _open(self) -> None:
        """Load the artifact into the engine."""

    def _close(self) -> None:
        """Release the engine; must be safe to call twice."""

    def _require_active(self) -> None:
        if not self._active:
            raise RunnerStateError(f"the {self.name} runner is not open: use it in a `with` block "
                                   f"(with target.runner(artifact) as runner: ...)")

    # -- work --------------------------------------------------------------------------------------

    def infer(self, images: np.ndarray) -> np.ndarray:
        """[N, 3, H, W] float32 -> [N, K] float32, one sample at a time (artifacts have batch 1)."""
        self._require_active()
        images = np.asarray(images)
        expected = self.input_shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise ArtifactError(
                f"{self.name}: feed of shape {tuple(images.shape)} does not match the input [N, {', '.join(map(str, expected))}]"
            )
        images = images.astype(np.float32, copy=False)
        return np.concatenate([np.asarray(self._infer(images[i:i + 1]), dtype=np.float32) for i in range(len(images))])

    def time_inference(self, image: np.ndarray, repeats: int, warmup: int = 3) -> list[float]:
        """Milliseconds of single-image inferences after `warmup` untimed ones. Runners that can time
        closer to the engine (LiteRT inside its worker) override this."""
        self._require_active()
        x = np.ascontiguousarray(np.asarray(image, dtype=np.float32)[:1])
        return time_calls(lambda: self._infer(x), repeats, warmup)

    def infer_intermediates(self, x: np.ndarray, names: list) -> dict:
        """One canonical image [1, 3, H, W] -> {name: value} for the intermediate tensors asked for, as
        the engine holds them (layout and dtype unchanged), for `mvdeploy debug`. A name is what the
        engine calls a tensor (a graph value's name, a tensor index, an op result's name)."""
        self._require_active()
        return self._infer_intermediates(np.asarray(x, dtype=np.float32)[:1], list(names))

    def _infer_intermediates(self, x: np.ndarray, names: list) -> dict:
        raise ArtifactError(f"the {self.name} runner cannot return intermediate tensors")

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """[1, 3, H, W] float32 -> [1, K] float32."""
