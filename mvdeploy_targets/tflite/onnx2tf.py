"""The onnx2tf backend: PyTorch -> ONNX -> .tflite, with onnx2tf in a subprocess in a temporary folder.

torch.onnx.export at opset 20 (exact GELU is an ONNX Gelu, not an Erf that would become FlexErf),
then `python -m onnx2tf` on a copy. Its sample calibration file, which it would otherwise download,
is written into the working folder from our own images first; its int8 is calibrated on
`calibration.batches` (-cind with mean 0, std 1: the images are already preprocessed). Its
*_with_int16_act outputs are never used (they abort the interpreter). onnx2tf makes NHWC inputs;
for an NCHW spec a TRANSPOSE is put in front.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilevit_deploy.chatter import quiet_chatter, tail
from mobilevit_deploy.errors import ConversionError, first_line
from mobilevit_deploy.formats.tflite import nchw_input
from mobilevit_deploy.quantization.calibrate import no_images, source_note, validate_batch
from mobilevit_deploy.spec import Calibration, ExportSpec, Layout, Precision
from mobilevit_deploy.versions import version_of

ONNX_OPSET = 20                   # Gelu is an ONNX op from opset 20 on
ONNX_INPUT = "image"
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"   # what onnx2tf downloads
TIMEOUT_S = 3600

# precision -> (extra onnx2tf arguments, the output file to keep for float I/O, ... for int8 I/O)
OUTPUTS: dict[Precision, tuple[tuple[str, ...], str, str | None]] = {
    Precision.fp32: ((), "model_float32.tflite", None),
    Precision.fp16: ((), "model_float16.tflite", None),
    Precision.int8: (("-oiqt", "-qt", "per-channel", "-iqd", "int8", "-oqd", "int8"),
                     "model_integer_quant.tflite", "model_full_integer_quant.tflite"),
    Precision.int8_dynamic: (("-odrqt",), "model_dynamic_range_quant.tflite", None),
}
OUTPUTS[Precision.int8_static] = OUTPUTS[Precision.int8]      # onnx2tf has one static int8 recipe


def convert(model: nn.Module, spec: ExportSpec, out_path: Path, calibration: Calibration | None) -> list[str]:
    """Write `out_path`; returns the notes the artifact carries."""
    extra_args, float_io_name, int8_io_name = OUTPUTS[spec.precision]
    produced_name = int8_io_name if spec.int8_io else float_io_name
    notes = [f"onnx2tf {version_of('onnx2tf', '(unknown version)')} from ONNX opset {ONNX_OPSET}"]

    with tempfile.TemporaryDirectory(prefix="mvdeploy-onnx2tf-") as tmp:
        work = Path(tmp)
        exported = work / "exported.onnx"
        _export_onnx(model, spec.image_size, exported)
        shutil.copyfile(exported, work / "model.onnx")          # onnx2tf rewrites the file it is given

        # Our images (or seeded synthetic ones) go in as -cind data (int8 calibration, and the input of
        # onnx2tf's own per-op accuracy checks; without it those checks fail on some graphs), and as
        # the stand-in for the sample file it would otherwise download.
        images = _calibration_nhwc(calibration, spec.image_size) if calibration is not None \
            else _synthetic_nhwc(spec.image_size)
        np.save(work / "inputs.npy", images)
        np.save(work / SAMPLE_FILE, _sample(images))
        args = [sys.executable, "-m", "onnx2tf", "-i", "model.onnx", "-o", "out", "-v", "error", *extra_args,
                "-cind", ONNX_INPUT, "inputs.npy", "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]"]
        if spec.precision in (Precision.int8, Precision.int8_static):
            notes.append(f"int8 static (per-channel weights) calibrated on {source_note(calibration, len(images))}")
        log = _run(args, work)

        produced = work / "out" / produced_name
        if not produced.is_file():
            raise ConversionError(f"onnx2tf did not write {produced_name}{tail(log)}")
        data = produced.read_bytes()
    if spec.layout is Layout.nchw:
        data = nchw_input(data)
        notes.append("onnx2tf builds NHWC; a TRANSPOSE in front takes the NCHW input")
    out_path.write_bytes(data)
    return notes


def _export_onnx(model: nn.Module, image_size: int, path: Path) -> None:
    example = torch.zeros(1, 3, image_size, image_size)
    with quiet_chatter() as chatter:
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[ONNX_INPUT], output_names=["logits"])
        except Exception as e:
            raise ConversionError(f"ONNX export for onnx2tf failed: {type(e).__name__}: {first_line(e)}"
                                  f"{tail(chatter())}") from None


def _run(args: list[str], work: Path) -> str:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])   # its `onnxsim` step
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[proxy] = "http://127.0.0.1:9"      # belt and braces: any download attempt fails at once
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"onnx2tf did not finish within {TIMEOUT_S} s") from None
    log = done.stdout + done.stderr
    if done.returncode != 0:
        signal_note = f" (killed by signal {-done.returncode})" if done.returncode < 0 else ""
        raise ConversionError(f"onnx2tf failed with exit code {done.returncode}{signal_note}{tail(log)}")
    return log


def _sample(images: np.ndarray) -> np.ndarray:
    """The 20 x 128 x 128 x 3 float32 array onnx2tf would download for its own checks, made from our images."""
    source = torch.from_numpy(images).permute(0, 3, 1, 2)
    source = source[torch.arange(20) % len(source)]
    resized = torch.nn.functional.interpolate(source.float(), size=(128, 128), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def _synthetic_nhwc(image_size: int, count: int = 8) -> np.ndarray:
    """Seeded standard-normal images, roughly the statistics of preprocessed inputs."""
    images = torch.randn((count, image_size, image_size, 3), generator=torch.Generator().manual_seed(0))
    return images.numpy().astype(np.float32)


def _calibration_nhwc(calibration: Calibration, image_size: int) -> np.ndarray:
    batches = []
    for batch in calibration.batches:
        validate_batch(batch, image_size)
        batches.append(batch.float().permute(0, 2, 3, 1).numpy())
    if not batches:
        raise no_images()
    return np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)
