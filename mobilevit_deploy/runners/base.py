"""One interface for every engine that can run a model: torch, onnxruntime, LiteRT, CoreML.

A runner loads in `__enter__`, checks the feed in `infer()` and does the work in `_infer()`.
The feed is always the canonical layout: float32 images [N, 3, H, W], preprocessed. Each runner
owns its own layout (NHWC for TFLite) and integer I/O, so comparisons see one layout.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import ArtifactError


class Runner(ABC):
    name: str = "runner"

    def __init__(self, input_shape: tuple[int, int, int, int]):
        self.input_shape = tuple(input_shape)      # canonical [1, 3, H, W]

    @property
    def engine(self) -> str:
        """What actually ran, with its version, for reports (e.g. 'onnxruntime 1.23.2 CPU')."""
        return self.name

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def infer(self, images: np.ndarray) -> np.ndarray:
        """[N, 3, H, W] float32 -> [N, K] float32, one sample at a time (artifacts have batch 1)."""
        images = np.asarray(images)
        expected = self.input_shape[1:]
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise ArtifactError(
                f"{self.name}: feed of shape {tuple(images.shape)} does not match the input [N, {', '.join(map(str, expected))}]"
            )
        images = images.astype(np.float32, copy=False)
        return np.concatenate([np.asarray(self._infer(images[i:i + 1]), dtype=np.float32) for i in range(len(images))])

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """[1, 3, H, W] float32 -> [1, K] float32."""
