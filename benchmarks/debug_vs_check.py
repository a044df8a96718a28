"""`mvdeploy debug` against `mvdeploy check` on the same file, wall time as users run them, in one run.

mobilevit_xxs at 256 (the digits reference weights, which MobileViT runs at any size), converted once
per target; then `check FILE --model mobilevit_xxs` and `debug FILE --model mobilevit_xxs` alternate for
`--rounds` rounds so load from elsewhere touches both alike. Prints each median and the ratio (the
debug issue's bound: debug at most 3x check).

    .venv/bin/python benchmarks/debug_vs_check.py [--targets tflite,onnx] [--rounds 2]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "mobilevit_deploy.cli"]


def _timed(*args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([*CLI, *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1):                 # 1: a parity failure or a divergence is still a run
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.strip()[-400:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="tflite,onnx")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(f"{'target':<10}{'check s':>9}{'debug s':>9}{'debug / check':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            out = Path(tmp) / target
            subprocess.run([*CLI, "convert", "mobilevit_xxs", "--image-size", str(args.size), "--target", target,
                            "--no-check", "--out", str(out)], check=True, capture_output=True)
            artifact = next(p for p in out.iterdir() if p.suffix in (".tflite", ".onnx", ".mlpackage", ".pte"))
            check, debug = [], []
            for _ in range(args.rounds):
                check.append(_timed("check", str(artifact), "--model", "mobilevit_xxs"))
                debug.append(_timed("debug", str(artifact), "--model", "mobilevit_xxs"))
            c, d = statistics.median(check), statistics.median(debug)
            print(f"{target:<10}{c:>9.1f}{d:>9.1f}{d / c:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
