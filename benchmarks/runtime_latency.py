"""onnxruntime vs PyTorch eager latency on the fused model, measured in one run (read the ratio).

Usage: python benchmarks/runtime_latency.py [--models a,b] [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


from mobilevit_deploy import pipeline
from mobilevit_deploy.models import MODELS
from mobilevit_deploy.runners.torch import TorchRunner
from mobilevit_deploy.spec import Precision
from converters import get_target


def median_ms(runner, x, repeats: int) -> float:
    for _ in range(3):
        runner.infer(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.infer(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="mobilevit_xxs,swin_micro")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{'model':<16}{'torch ms':>10}{'ort ms':>10}{'ort/torch':>11}{'max_rel':>11}")
    for name in args.models.split(","):
        prepared = pipeline.prepare_model(name, weights="random")      # the default input size
        with tempfile.TemporaryDirectory() as tmp:
            result = pipeline.convert(prepared, "onnx", Precision.fp32, Path(tmp))
            x = pipeline.parity_inputs(prepared, synthetic=1).images
            shape = (1, 3, prepared.image_size, prepared.image_size)
            with get_target("onnx").runner(result.artifact) as ort_runner:
                t, o = [], []
                for _ in range(3):
                    t.append(median_ms(TorchRunner(prepared.model, shape), x, args.repeats))
                    o.append(median_ms(ort_runner, x, args.repeats))
        print(f"{name:<16}{min(t):>10.2f}{min(o):>10.2f}{min(o) / min(t):>11.3f}{result.report.metrics.max_rel:>11.2e}")


if __name__ == "__main__":
    main()
