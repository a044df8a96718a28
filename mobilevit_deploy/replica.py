"""The replica: PyTorch computing what a file's own precision computes, the reference of the integrity check.

The accuracy comparison (a file against the float model) says how far quantization took the outputs; it
cannot tell a correct int8 file from one with a second error as large as the quantization itself. The
integrity comparison runs the file against its replica, so only the engine's own rounding is left:

  fp16 weights, float compute   the model with its convolution and linear weights rounded to fp16
  static int8 (PT2E)             the quantized graph the converter lowered (`convert_pt2e`: the same scales,
                                 zero points and recipe), run in PyTorch on the same calibration

A target builds its replicas (`Target.replica`); a replica it cannot reproduce says why, and the parity
report carries that sentence instead of a comparison.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .spec import Calibration

BATCH = 4       # images per replica call (the PT2E graph exports batch-dynamic where the model allows)


@dataclass(frozen=True)
class Replica:
    what: str                       # what computes the reference, or why there is none
    module: nn.Module | None = None  # None: not reproduced
    nhwc: bool = False              # the module takes [N, H, W, C] (a channels-last file's graph)
    batched: bool = True            # the module takes more than one image at a time

    @property
    def reproduced(self) -> bool:
        return self.module is not None

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """The replica's outputs [N, K] for preprocessed NCHW images."""
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        x = x.permute(0, 2, 3, 1).contiguous() if self.nhwc else x
        step = BATCH if self.batched else 1
        with torch.no_grad():
            return np.concatenate([self.module(x[i:i + step]).float().reshape(len(x[i:i + step]), -1).numpy()
                                   for i in range(0, len(x), step)])


def not_reproduced(why: str) -> Replica:
    return Replica(why)


def fp16_weights(model: nn.Module) -> Replica:
    """The model with every convolution and linear weight rounded to fp16 (biases and norms stay fp32),
    computing in fp32: what a file with fp16 weights dequantized at load computes."""
    rounded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in rounded.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(module.weight.half().float())
    return Replica("PyTorch with the conv/linear weights rounded to fp16, fp32 compute", rounded)


def int8_graph(model: nn.Module, quantizer, calibration: Calibration, image_size: int, what: str,
               transform=lambda exported: exported) -> Replica:
    """The PT2E graph `quantizer` makes of `model` calibrated on `calibration`, rebuilt for a file that
    already exists (a conversion hands over the graph it lowered instead)."""
    from .quantization.calibrate import quantized_graph

    graph, batched, _ = quantized_graph(model, (torch.zeros(1, 3, image_size, image_size),), quantizer,
                                        calibration, transform=transform)
    return Replica(what, graph, batched=batched)
