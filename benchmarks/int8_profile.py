"""Where int8 TFLite time goes: the attention core (q @ k^T, softmax, @ v) against everything else.

LiteRT's Python interpreter has no per-op profiler, and inside the XNNPACK delegate there are no op
boundaries to time. So the profile is subtractive: each model is converted twice, as is and with the
attention core cut out (each attention returns its projected values: the qkv and proj layers, norms,
MLPs and convolutions stay), at fp32 and at `--precision int8`, and the four files are timed in one
interleaved run (`mvdeploy bench`'s interleaving; LiteRT, XNNPACK, 2 threads, single image).

Printed per model: the attention core's share of fp32 and of int8 latency, and int8/fp32 with and
without it. If int8/fp32 without the core meets the bound while with it does not, the core is what
keeps int8 from its bound: XNNPACK has no int8 kernels for the batched matmuls between two activations
and the softmax, so the int8 graph computes them in float between QUANTIZE/DEQUANTIZE.

    .venv/bin/python benchmarks/int8_profile.py [--models mobilevit_xxs,swin_micro] [--rounds 15]
"""
from __future__ import annotations

import argparse
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from mobilevit_deploy import pipeline
from mobilevit_deploy.bench import bench
from mobilevit_deploy.calibration import calibration_for
from mobilevit_deploy.models import layers, swin
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target

SIZES = {"mobilevit_xxs": 256, "mobilevit_xs": 256, "swin_micro": 224, "swin_tiny": 224}


def _values_only(self, x, mask=None):
    """An attention without its core: qkv, then v as the attended values, then proj."""
    _, num_tokens, dim = x.shape
    qkv = self.qkv(x).reshape(-1, num_tokens, 3, self.num_heads, self.head_dim)
    v = qkv.permute(2, 0, 3, 1, 4)[2]                                   # [B, h, N, hd]
    return self.proj(v.transpose(1, 2).reshape(-1, num_tokens, dim))


@contextmanager
def attention_core_removed():
    saved = layers.Attention.forward, swin.WindowAttention.forward
    layers.Attention.forward = swin.WindowAttention.forward = _values_only
    try:
        yield
    finally:
        layers.Attention.forward, swin.WindowAttention.forward = saved


def _convert(prepared, precision, out, calibration):
    target = get_target("tflite")
    return pipeline.convert(prepared, target, prepared.spec(precision), out, check=False,
                            calibration=calibration if target.needs_calibration(precision) else None).artifact.path


def profile(name: str, rounds: int, threads: int) -> None:
    prepared = pipeline.prepare_model(name, weights="random", image_size=SIZES.get(name))
    calibration = calibration_for(prepared, "synthetic", samples=32)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for cut in (False, True):
            for precision in (Precision.fp32, Precision.int8):
                out = Path(tmp) / f"{'cut' if cut else 'full'}-{precision.value}"
                if cut:
                    with attention_core_removed(), torch.no_grad():
                        files[cut, precision] = _convert(prepared, precision, out, calibration)
                else:
                    files[cut, precision] = _convert(prepared, precision, out, calibration)
        keys = list(files)
        rows = dict(zip(keys, bench([files[k] for k in keys], num_threads=threads, rounds=rounds, per_round=5).rows))
    ms = {k: r.median_ms for k, r in rows.items()}
    fp32, int8 = Precision.fp32, Precision.int8
    share = {p: 1 - ms[True, p] / ms[False, p] for p in (fp32, int8)}
    print(f"{name} {prepared.image_size}: fp32 {ms[False, fp32]:.2f} ms, int8 {ms[False, int8]:.2f} ms "
          f"(int8/fp32 {ms[False, int8] / ms[False, fp32]:.2f}); without the attention core: fp32 "
          f"{ms[True, fp32]:.2f} ms, int8 {ms[True, int8]:.2f} ms (int8/fp32 {ms[True, int8] / ms[True, fp32]:.2f}); "
          f"the core's share of latency: fp32 {share[fp32]:.0%}, int8 {share[int8]:.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilevit_xxs,swin_micro")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for name in args.models.split(","):
        profile(name, args.rounds, args.threads)


if __name__ == "__main__":
    main()
