"""TFLite fp32 / int8 against onnxruntime and PyTorch, every variant, one run (read the ratios).

For each variant at its default input size (random weights; latency does not depend on them):
convert to ONNX and to TFLite fp32 and int8 (litert-torch; int8 calibrated on 16 synthetic images,
which is enough for timing), then time single-image inference of each in the same run.

Usage: python benchmarks/tflite_latency.py [--models a,b] [--repeats N] [--converter onnx2tf]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from mobilevit_deploy.targets import get_target
from mobilevit_deploy import pipeline
from mobilevit_deploy.calibration import calibration_for
from mobilevit_deploy.models import MODELS
from mobilevit_deploy.quantization.latency import time_runner
from mobilevit_deploy.runners.torch import TorchRunner
from mobilevit_deploy.spec import Precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--converter", default=None, help="tflite converter (default litert-torch)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    header = (f"{'model':<15}{'prec':<6}{'MB':>7}{'convert s':>10}{'torch ms':>10}{'ort ms':>9}{'tflite ms':>10}"
              f"{'tfl/ort':>9}{'tfl/torch':>10}{'int8/fp32':>10}{'max_rel':>10}{'cos_min':>9}")
    print(header)
    for name in args.models.split(","):
        prepared = pipeline.prepare_model(name, weights="random")
        x = pipeline.parity_inputs(prepared, synthetic=1).images
        shape = (1, 3, prepared.image_size, prepared.image_size)
        with TorchRunner(prepared.model, input_shape=shape) as torch_runner:
            torch_ms = time_runner(torch_runner, x, args.repeats)[0]
        calibration = calibration_for(prepared, "synthetic", samples=16)
        with tempfile.TemporaryDirectory() as tmp:
            onnx = pipeline.convert(prepared, "onnx", prepared.spec(Precision.fp32), Path(tmp))
            with get_target("onnx").runner(onnx.artifact) as runner:
                ort_ms = time_runner(runner, x, args.repeats)[0]
            fp32_ms = None
            for precision in (Precision.fp32, Precision.int8):
                result = pipeline.convert(prepared, "tflite", prepared.spec(precision, converter=args.converter), Path(tmp),
                                          calibration=calibration if precision is Precision.int8 else None)
                with get_target("tflite").runner(result.artifact) as runner:
                    ms = time_runner(runner, x, args.repeats)[0]
                fp32_ms = fp32_ms or ms
                m = result.report.metrics
                print(f"{name:<15}{precision.value:<6}{result.artifact.size_bytes / 1e6:>7.2f}{result.seconds:>10.1f}"
                      f"{torch_ms:>10.2f}{ort_ms:>9.2f}{ms:>10.2f}{ms / ort_ms:>9.2f}{ms / torch_ms:>10.2f}"
                      f"{ms / fp32_ms:>10.2f}{m.max_rel:>10.2e}{m.cosine_min:>9.5f}", flush=True)


if __name__ == "__main__":
    main()
