"""The report's evaluation at dataset scale: the driver's peak memory against the number of images, and
images per second in-process against a local Ray of N workers.

Writes a set of small JPEGs (default 20,000 at 64x64, 10 classes: the shipped digits, each drawn again
with a random shift and noise, so that the reference checkpoint's accuracy means something), then runs
`mvdeploy report mobilevit_xxs --targets onnx --precisions fp32 --eval-data SET --eval-limit N` through
the real CLI for each size, in-process and with --workers N, one run after the other. Each run is a
fresh process; its own peak RSS (getrusage RUSAGE_SELF: the driver alone, not its Ray workers) is
printed by the process itself when the report is written.

The bound the driver must stay under, derived before measuring: the smallest run's peak RSS (imports,
the model, the engines, Ray's client) plus, per additional image, twice what the driver keeps of it --
its listing entry (measured here with tracemalloc over `list_images`) and its logits and label for the
reference and the file (K float32 + one int64 each) -- twice for the copies made while gathering. The
old design kept every preprocessed image as well (3 x 64 x 64 float32 = 48 KiB per image at 64 px).

The in-process runs get --in-process-threads torch/OpenMP threads (default 1, what each Ray task of
--workers 2 gets on 2 cores): on a machine shared with other jobs, two contending intra-op threads made
PyTorch 19x slower here (256 images: 49.7 s on 2 threads, 2.6 s on 1), which would measure the contention,
not the design. The load average is printed beside each run.

Usage: python benchmarks/eval_scale.py [--sizes 5000,20000] [--workers 2] [--shard-size 256]
                                       [--in-process-sizes 5000,20000] [--in-process-threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

DRIVER = ("import resource, runpy, sys\n"
          "sys.argv = ['mvdeploy', *sys.argv[1:]]\n"
          "try:\n    runpy.run_module('mobilevit_deploy.cli', run_name='__main__')\n"
          "except SystemExit as e:\n    code = e.code\n"
          "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)\n")
CLASSES = 10
SIDE = 64


def write_set(root: Path, count: int, seed: int = 0) -> None:
    """`count` JPEGs root/<digit>/<i>.jpg: a shipped digit, shifted by up to a pixel, upscaled, with noise."""
    from PIL import Image

    from mobilevit_deploy.digits import digits_split

    split = digits_split()
    pixels = np.concatenate([split.train.images, split.test.images])
    labels = np.concatenate([split.train.labels, split.test.labels])
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = i % len(labels)
        digit = np.roll(pixels[k], tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
        big = np.asarray(Image.fromarray(digit).resize((SIDE, SIDE), Image.BICUBIC), dtype=np.float32)
        noisy = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).convert("RGB").save(root / str(labels[k]) / f"{i:06d}.jpg", quality=90)


def listing_bytes_per_image(root: Path) -> float:
    """What the driver's listing of the set costs per image (ImageFile, its Path), measured."""
    from mobilevit_deploy.data import list_images

    tracemalloc.start()
    files, _ = list_images(root)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / len(files)


def run(eval_set: Path, count: int, out: Path, shard_size: int, workers: int | None, threads: int | None) -> dict:
    extra = ["--workers", str(workers)] if workers else []
    command = [sys.executable, "-c", DRIVER, "report", "mobilevit_xxs", "--targets", "onnx", "--precisions", "fp32",
               "--eval-data", str(eval_set), "--eval-limit", str(count), "--shard-size", str(shard_size),
               "--repeats", "3", "--out", str(out), *extra]
    start = time.perf_counter()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads and not workers else {})}
    ran = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    last = ran.stdout.strip().splitlines()[-1].split() if ran.stdout.strip() else []
    if not last or last[0] != "PEAK_RSS_KB" or last[2] not in ("0", "None"):
        sys.exit(f"report of {count} images {extra} failed:\n{ran.stdout[-2000:]}\n{ran.stderr[-3000:]}")
    saved = json.loads((out / "report.json").read_text())
    (m,) = saved["models"]
    figures = (m["eval"]["images"], m["torch_fp32"]["accuracy"],
               [(r["accuracy"], r["top1_agreement"], r["cosine_min"], r["sqnr_db"]) for r in m["rows"]])
    return {"rss_mb": int(last[1]) / 1024, "wall_s": wall, "tasks": saved["executor"]["tasks"],
            "shards": m["eval"]["shards"], "classes": len(m["rows"]) and CLASSES, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000", help="evaluation set sizes run with --workers")
    parser.add_argument("--in-process-sizes", default="5000,20000", help="the sizes also run in-process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--in-process-threads", type=int, default=1, help="0: torch's default")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.sizes.split(","))
    local = sorted(int(n) for n in args.in_process_sizes.split(",") if n)
    with tempfile.TemporaryDirectory(prefix="eval-scale-") as scratch:
        eval_set = Path(scratch) / "set"
        start = time.perf_counter()
        write_set(eval_set, max(sizes + local))
        print(f"wrote {max(sizes + local):,} {SIDE}x{SIDE} JPEGs ({CLASSES} classes) in {time.perf_counter() - start:.0f} s")
        listing = listing_bytes_per_image(eval_set)
        kept = 2 * (CLASSES * 4 + 8)                 # logits + label, for the reference and the one file
        per_image = 2 * (listing + kept)
        results = {}
        for label, workers, counts in (("in-process", None, local), (f"--workers {args.workers}", args.workers, sizes)):
            for n in counts:
                results[(label, n)] = run(eval_set, n, Path(scratch) / f"out-{workers}-{n}", args.shard_size, workers,
                                          args.in_process_threads)
                r = results[(label, n)]
                print(f"  {label:<12} {n:>7,} images: peak RSS {r['rss_mb']:7.1f} MB, {r['wall_s']:6.1f} s wall, "
                      f"{r['tasks']['images_per_second']} images/s over the tasks; load average after "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
    print(f"\ndriver memory per image, measured: listing entry {listing:.0f} B, logits + labels kept {kept} B; "
          f"bound per added image 2 x ({listing:.0f} + {kept}) = {per_image / 1024:.2f} KiB "
          f"(the old design also held {3 * SIDE * SIDE * 4 / 1024:.0f} KiB of pixels per image)")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    print(f"\nCPU: {cpu}, {os.cpu_count()} cores; in-process runs on {args.in_process_threads or 'default'} thread(s)")
    print(f"\n| run | images | shards | tasks (failed, retried) | driver peak RSS MB | bound MB | "
          f"image evaluations/s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts = []
    for label in dict.fromkeys(lab for lab, _ in results):
        counts = sorted(n for lab, n in results if lab == label)
        base = results[(label, counts[0])]
        for n in counts:
            r = results[(label, n)]
            bound = base["rss_mb"] * 1.05 + (n - counts[0]) * per_image / 2**20
            verdicts.append(r["rss_mb"] <= bound)
            t = r["tasks"]
            print(f"| {label} | {n:,} | {r['shards']} | {t['tasks']} ({t['failed']}, {t['retried']}) | "
                  f"{r['rss_mb']:.1f} | {bound:.1f} | {t['images_per_second']} | {r['wall_s']:.1f} |")
    print(f"\nbound: the smallest run's peak x 1.05 + {per_image / 1024:.2f} KiB per added image; "
          f"every run within it: {all(verdicts)}")
    for n in sorted(set(local) & set(sizes)):
        same = results[("in-process", n)]["figures"] == results[(f"--workers {args.workers}", n)]["figures"]
        print(f"{n:,} images: every figure the same in-process and with --workers {args.workers}: {same} "
              f"{results[('in-process', n)]['figures']}")
    for n in sorted(set(local) & set(sizes)):
        a, b = results[("in-process", n)]["tasks"], results[(f"--workers {args.workers}", n)]["tasks"]
        if a["images_per_second"] and b["images_per_second"]:
            print(f"{n:,} images: {b['images_per_second'] / a['images_per_second']:.2f}x the image evaluations per "
                  f"second with --workers {args.workers}")
    if not all(verdicts):
        sys.exit("the driver's peak RSS grew beyond the bound")


if __name__ == "__main__":
    main()
