"""Wall time of one `mvdeploy report` in-process against the same report on a local Ray of N workers.

The report (default: both reference models x ONNX fp32 + TFLite fp32, fp16, int8 = 8 cells, all 450
held-out digits) runs twice through the real CLI, each into a fresh folder with --no-reuse, one after
the other: first in-process, then with --workers N. Prints both wall times, their ratio, and whether
every printed figure (latency aside) came out the same.

Usage: python benchmarks/report_scale.py [--models a,b] [--targets onnx,tflite] [--precisions fp32,fp16,int8]
                                         [--workers 2] [--shard-size 256] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobilevit_deploy.quantization.evaluate import VariantResult
from mobilevit_deploy.quantization.report import ModelReport, Report
from mobilevit_deploy.reports import headline_rows

LATENCY = 5                    # the headline column that is a timing


def figures(report_json: Path) -> list[tuple]:
    saved = json.loads(report_json.read_text())
    models = [ModelReport(m["model"], m["weights"], m["image_size"], m["eval"]["source"], m["eval"]["images"], 0,
                          None, 0, m["torch_fp32"]["accuracy"], (0.0, 0.0), [VariantResult(**r) for r in m["rows"]])
              for m in saved["models"]]
    return [row[:LATENCY] + row[LATENCY + 1:] for row in headline_rows(Report("", {}, models))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilevit_xxs,swin_micro")
    parser.add_argument("--targets", default="onnx,tflite")
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    common = ["report", args.models, "--targets", args.targets, "--precisions", args.precisions, "--no-reuse",
              "--shard-size", str(args.shard_size), "--repeats", str(args.repeats)]
    seconds, outs = {}, {}
    with tempfile.TemporaryDirectory(prefix="report-scale-") as scratch:
        for label, extra in (("in-process", []), (f"--workers {args.workers}", ["--workers", str(args.workers)])):
            out = Path(scratch) / label.replace(" ", "").replace("-", "")
            start = time.perf_counter()
            ran = subprocess.run([sys.executable, "-m", "mobilevit_deploy.cli", *common, "--out", str(out), *extra],
                                 capture_output=True, text=True)
            seconds[label] = time.perf_counter() - start
            if ran.returncode != 0:
                sys.exit(f"{label} failed:\n{ran.stderr[-3000:]}")
            outs[label] = out / "report.json"
        cells = sum(len(m["rows"]) + len(m["failures"]) for m in json.loads(outs["in-process"].read_text())["models"])
        same = figures(outs["in-process"]) == figures(outs[f"--workers {args.workers}"])
    print(f"report of {cells} cells ({args.models} x {args.targets} x {args.precisions}), "
          f"shards of {args.shard_size} images")
    for label, s in seconds.items():
        print(f"{label:<14}{s:>8.1f} s")
    print(f"{'ratio':<14}{seconds['in-process'] / seconds[f'--workers {args.workers}']:>8.2f}x faster with "
          f"--workers {args.workers}")
    print(f"every printed figure (latency aside) the same: {same}")


if __name__ == "__main__":
    main()
