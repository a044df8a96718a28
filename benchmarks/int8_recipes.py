"""Every TFLite int8 recipe against fp32, measured in one interleaved run on this machine.

For each model at its default input size (random weights: latency does not depend on them): convert
fp32, int8 (the XNNPACK-shaped recipe), int8-static (litert-torch's plain PT2E) and int8-dynamic,
then time all of a model's files round-robin (`mvdeploy bench`'s interleaving) with LiteRT, XNNPACK,
2 threads, single image. Prints latency median and spread, ratio to fp32, size, conversion time and
what XNNPACK takes. Then accuracy on the digits test split (450 real images) for the two reference
checkpoints at 64x64, every recipe calibrated on the train split.

    .venv/bin/python benchmarks/int8_recipes.py [--models mobilevit_xxs,swin_micro] [--rounds 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilevit_deploy import pipeline
from mobilevit_deploy.bench import bench
from mobilevit_deploy.calibration import calibration_for
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target

RECIPES = (Precision.fp32, Precision.int8, Precision.int8_static, Precision.int8_dynamic)


def _convert(prepared, precision, out, calibration):
    target = get_target("tflite")
    start = time.perf_counter()
    result = pipeline.convert(prepared, target, prepared.spec(precision), out, check=False,
                              calibration=calibration if target.needs_calibration(precision) else None)
    return result.artifact, time.perf_counter() - start


def latency(models: list[str], rounds: int, threads: int) -> None:
    print(f"{'model':<15}{'recipe':<14}{'MB':>7}{'convert s':>10}{'median ms':>10}{'p10-p90 ms':>14}"
          f"{'x fp32':>8}  XNNPACK")
    for name in models:
        prepared = pipeline.prepare_model(name, weights="random")
        calibration = calibration_for(prepared, "synthetic", samples=32)
        with tempfile.TemporaryDirectory() as tmp:
            made = [(p, *_convert(prepared, p, Path(tmp), calibration)) for p in RECIPES]
            rows = bench([a.path for _, a, _ in made], num_threads=threads, rounds=rounds, per_round=5).rows
            for (precision, artifact, seconds), row in zip(made, rows):
                xnn = next((n for n in artifact.notes if n.startswith("XNNPACK")), "")
                print(f"{name + ' ' + str(prepared.image_size):<15}{precision.value:<14}{row.size_bytes / 1e6:>7.2f}"
                      f"{seconds:>10.1f}{row.median_ms:>10.2f}{f'{row.p10_ms:.2f}-{row.p90_ms:.2f}':>14}"
                      f"{row.ratio:>8.2f}  {xnn.replace('XNNPACK takes ', '')}", flush=True)


def accuracy() -> None:
    print(f"\n{'model (digits 64)':<18}{'recipe':<14}{'top-1':>8}{'vs torch':>10}{'agree':>8}")
    for name in ("mobilevit_xxs", "swin_micro"):
        prepared = pipeline.prepare_model(name)
        test = prepared.reference.read("test", prepared.preprocess)
        images, labels = test.images.numpy(), test.labels.numpy()
        with torch.no_grad():
            expected = prepared.model(test.images).numpy()
        torch_top1 = np.mean(expected.argmax(1) == labels)
        calibration = calibration_for(prepared, None)
        with tempfile.TemporaryDirectory() as tmp:
            for precision in RECIPES:
                artifact, _ = _convert(prepared, precision, Path(tmp), calibration)
                with get_target("tflite").runner(artifact) as runner:
                    logits = runner.infer(images)
                top1 = np.mean(logits.argmax(1) == labels)
                agree = np.mean(logits.argmax(1) == expected.argmax(1))
                print(f"{name:<18}{precision.value:<14}{100 * top1:>7.2f}%{100 * (top1 - torch_top1):>+9.2f}pt"
                      f"{100 * agree:>7.1f}%", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilevit_xxs,mobilevit_xs,swin_micro,swin_tiny")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    latency(args.models.split(","), args.rounds, args.threads)
    if not args.no_accuracy:
        accuracy()


if __name__ == "__main__":
    main()
