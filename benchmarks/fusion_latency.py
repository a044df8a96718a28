"""Fused vs unfused eager latency, measured in one run (this machine is shared and noisy: read the ratio).

Usage: python benchmarks/fusion_latency.py [--models a,b] [--repeats N]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from mobilevit_deploy.fusion import fuse
from mobilevit_deploy.models import MODELS, create_model
from mobilevit_deploy.runners.timing import time_calls


def median_ms(model, x, repeats: int) -> float:
    with torch.no_grad():
        return statistics.median(time_calls(lambda: model(x), repeats, warmup=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="mobilevit_xxs,mobilevit_xs,mobilevit_s,swin_micro,swin_tiny")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{'model':<16}{'pairs':>6}{'unfused ms':>12}{'fused ms':>10}{'fused/unfused':>15}")
    for name in args.models.split(","):
        size = MODELS[name].default_image_size
        model = create_model(name)
        result = fuse(model)
        x = torch.randn(1, 3, size, size)
        # interleave the two to share the machine's noise
        unfused, fused = [], []
        for _ in range(3):
            unfused.append(median_ms(model, x, args.repeats))
            fused.append(median_ms(result.model, x, args.repeats))
        u, f = min(unfused), min(fused)
        print(f"{name:<16}{result.fused_pairs:>6}{u:>12.2f}{f:>10.2f}{f / u:>15.3f}")


if __name__ == "__main__":
    main()
