"""ExecuTorch against LiteRT and onnxruntime: conversion time and latency, each measured in one run.

1. Conversion: `mvdeploy convert mobilevit_xxs --target executorch` against `--target tflite` (fp32, the
   64-pixel reference checkpoint, parity check included), as users run them, alternating the two
   commands for `--rounds` rounds so load from elsewhere touches both alike. Prints the median wall time
   of each and their ratio (the ExecuTorch issue's bound: at most 2x).
2. Latency: mobilevit_xxs at 256 and swin_micro at 224 (random weights: latency does not depend on them),
   ExecuTorch fp32 / int8 / int8-dynamic, LiteRT fp32 / int8 and onnxruntime fp32, all of a model's files
   timed round-robin (`mvdeploy bench`'s interleaving), single image, 2 threads; ratios to LiteRT fp32,
   with the bench's control (LiteRT fp32 timed again at the end of every round) and the host.

    .venv/bin/python benchmarks/executorch_vs_litert.py [--rounds 2] [--latency-rounds 10] [--skip-convert]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobilevit_deploy import pipeline
from mobilevit_deploy.bench import bench
from mobilevit_deploy.calibration import calibration_for
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target

CELLS = (("executorch", Precision.fp32), ("executorch", Precision.int8), ("executorch", Precision.int8_dynamic),
         ("tflite", Precision.fp32), ("tflite", Precision.int8), ("onnx", Precision.fp32))
BASELINE = 3                                     # LiteRT fp32: the ratios' denominator
ENGINES = {"executorch": "ExecuTorch", "tflite": "LiteRT", "onnx": "onnxruntime"}


def conversion(rounds: int) -> None:
    times: dict[str, list[float]] = {"tflite": [], "executorch": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for target in times:
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "mobilevit_deploy.cli", "convert", "mobilevit_xxs",
                                "--target", target, "--out", f"{tmp}/{target}{i}"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[target].append(time.perf_counter() - start)
                print(f"  round {i + 1}: {target:<11}{times[target][-1]:7.1f} s", flush=True)
    tfl, et = statistics.median(times["tflite"]), statistics.median(times["executorch"])
    print(f"convert mobilevit_xxs fp32 (64 px reference, parity included), median of {rounds}: "
          f"tflite {tfl:.1f} s, executorch {et:.1f} s, ratio {et / tfl:.2f}x\n")


def latency(rounds: int, threads: int) -> None:
    print(f"{'model':<18}{'engine':<13}{'precision':<14}{'MB':>7}{'median ms':>10}{'p10-p90 ms':>14}"
          f"{'x LiteRT fp32':>14}")
    for name, size in (("mobilevit_xxs", 256), ("swin_micro", 224)):
        prepared = pipeline.prepare_model(name, weights="random", image_size=size)
        calibration = calibration_for(prepared, "synthetic", samples=32)
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for target_name, precision in CELLS:
                target = get_target(target_name)
                result = pipeline.convert(prepared, target, prepared.spec(precision), Path(tmp), check=False,
                                          calibration=calibration if target.needs_calibration(precision) else None)
                files.append(result.artifact.path)
            order = [files[BASELINE]] + [f for i, f in enumerate(files) if i != BASELINE]
            run = bench(order, num_threads=threads, rounds=rounds, per_round=5)
            rows = dict(zip(order, run.rows))
            for (target_name, precision), path in zip(CELLS, files):
                row = rows[path]
                print(f"{name + ' ' + str(size):<18}{ENGINES[target_name]:<13}{precision.value:<14}"
                      f"{row.size_bytes / 1e6:>7.2f}{row.median_ms:>10.2f}{f'{row.p10_ms:.2f}-{row.p90_ms:.2f}':>14}"
                      f"{row.ratio:>14.2f}", flush=True)
            print(f"  {run.control.describe()}", flush=True)
    print(f"host: {run.host.describe()}; {threads} threads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="conversion rounds per target")
    parser.add_argument("--latency-rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-convert", action="store_true")
    args = parser.parse_args()
    if not args.skip_convert:
        conversion(args.rounds)
    latency(args.latency_rounds, args.threads)


if __name__ == "__main__":
    main()
