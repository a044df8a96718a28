"""onnxruntime (the fused ONNX export) vs PyTorch eager (the unfused source model), measured in one run.

Usage: python benchmarks/runtime_latency.py [--models a,b] [--repeats N]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from mobilevit_deploy import pipeline
from mobilevit_deploy.quantization.latency import time_runner
from mobilevit_deploy.runners.torch import TorchRunner
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target


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
            result = pipeline.convert(prepared, "onnx", prepared.spec(Precision.fp32), Path(tmp))
            x = pipeline.parity_inputs(prepared, synthetic=1).images
            shape = (1, 3, prepared.image_size, prepared.image_size)
            with get_target("onnx").runner(result.artifact) as ort_runner:
                t, o = [], []
                for _ in range(3):
                    with TorchRunner(prepared.model, input_shape=shape) as torch_runner:
                        t.append(time_runner(torch_runner, x, args.repeats)[0])
                    o.append(time_runner(ort_runner, x, args.repeats)[0])
        print(f"{name:<16}{min(t):>10.2f}{min(o):>10.2f}{min(o) / min(t):>11.3f}{result.report.metrics.max_rel:>11.2e}")


if __name__ == "__main__":
    main()
