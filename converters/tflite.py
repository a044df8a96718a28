"""TFLite target: PyTorch -> .tflite with litert-torch (default) or through ONNX with onnx2tf, run by LiteRT.

litert-torch (in this process):
  fp32          litert_torch.convert(model, (example,))
  fp16          + quant_config=quant_recipes.full_fp16_recipe(): fp16 weights (ai-edge-quantizer
                float casting), float32 compute and I/O
  int8          torchao PT2E static PTQ with litert-torch's PT2EQuantizer (symmetric, per-channel
                weights), calibrated by running `calibration.batches` through the prepared graph;
                ops without int8 kernels (LayerNorm, GELU, softmax...) stay float between
                QUANTIZE/DEQUANTIZE. litert-torch always makes the graph's I/O int8; without
                `int8_io` the file gets float32 I/O (one QUANTIZE in front, one DEQUANTIZE behind).
  int8-dynamic  + quant_config=quant_recipes.full_dynamic_recipe(): int8 weights, activations
                quantized at run time. Checked on a probe input before it is written (a
                dynamic-range file that outputs zeros is refused with ConversionError).

onnx2tf (in a subprocess, in a temporary folder): torch.onnx.export at opset 20 (exact GELU is an
ONNX Gelu, not an Erf that would become FlexErf), then `python -m onnx2tf` on a copy. Its sample
calibration file, which it would otherwise download, is written into the working folder from our
own images first; its int8 is calibrated on `calibration.batches` (-cind with mean 0, std 1: the
images are already preprocessed). Its *_with_int16_act outputs are never used (they abort the
interpreter). onnx2tf makes NHWC inputs; for an NCHW spec a TRANSPOSE is put in front.

Every file is read back (I/O, op names) before it is described; Flex or other custom ops that
the interpreter cannot run are refused by name.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mobilevit_deploy.errors import ArtifactError, ConversionError, MvDeployError, UnknownNameError
from mobilevit_deploy.runners.base import Runner
from mobilevit_deploy.runners.litert import (LiteRTRunner, TfliteFacts, canonical_shape, read_tflite,
                                             refuse_custom_ops)
from mobilevit_deploy.spec import Artifact, ExportSpec, Layout, Precision

from .base import Calibration, CalibrationRequiredError

ONNX_OPSET = 20                   # Gelu is an ONNX op from opset 20 on
ONNX_INPUT = "image"
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"   # what onnx2tf downloads
ONNX2TF_TIMEOUT_S = 3600
DYNAMIC_MIN_COSINE = 0.9          # below this an int8-dynamic file does not follow the model at all


class TFLiteTarget:
    name = "tflite"
    suffix = ".tflite"
    precisions = (Precision.fp32, Precision.fp16, Precision.int8, Precision.int8_dynamic)
    converters = ("litert-torch", "onnx2tf")

    def unavailable_reason(self) -> str | None:
        missing = [m for m in ("ai_edge_litert", "litert_torch", "torchao") if importlib.util.find_spec(m) is None]
        if missing:
            return f"tflite target needs {', '.join(missing)} (not importable); run make install"
        return None

    def convert(self, model: nn.Module, spec: ExportSpec, out_path: Path,
                calibration: Calibration | None = None) -> Artifact:
        converter = spec.converter or self.converters[0]
        if converter not in CONVERTERS:
            raise UnknownNameError(f"converter for target {self.name}", converter, CONVERTERS)
        if spec.precision not in self.precisions:
            raise UnknownNameError(f"precision for target {self.name}", spec.precision.value,
                                   [p.value for p in self.precisions])
        if spec.precision is Precision.int8 and calibration is None:
            raise CalibrationRequiredError(
                "tflite int8 is static quantization and needs calibration images: "
                "pass --calib-data DIR (preprocessed like the model's input) or --calib-data synthetic")
        if spec.int8_io and spec.precision is not Precision.int8:
            raise ConversionError(f"int8 I/O needs int8 precision (asked for {spec.precision.value} with int8 I/O)")

        out_path = Path(out_path)
        model = model.eval()
        notes = CONVERTERS[converter](model, spec, out_path, calibration)
        facts = read_tflite(out_path)
        try:
            refuse_custom_ops(out_path, facts)
        except ArtifactError as e:
            out_path.unlink(missing_ok=True)
            raise ConversionError(f"{converter} made a file LiteRT cannot run: {e}") from None
        artifact = _describe(out_path, facts, spec.precision, converter, notes)
        if spec.precision is Precision.int8_dynamic:
            _refuse_degenerate(artifact, model, converter)
        return artifact

    def load(self, path: Path, precision: Precision | None = None) -> Artifact:
        """Describe a .tflite from the file itself; `precision` (default: read from the tensor types)."""
        path = Path(path)
        facts = read_tflite(path)
        refuse_custom_ops(path, facts)
        if len(facts.inputs) != 1 or len(facts.inputs[0].shape) != 4:
            raise ArtifactError(f"{path}: expected one image input [1, 3, H, W] or [1, H, W, 3], "
                                f"found {[t.shape for t in facts.inputs]}")
        return _describe(path, facts, precision or _precision_of(facts), "", ())

    def runner(self, artifact: Artifact) -> Runner:
        return LiteRTRunner(artifact, num_threads=2)


def _describe(path: Path, facts: TfliteFacts, precision: Precision, converter: str,
              notes: tuple[str, ...] | list[str]) -> Artifact:
    notes = list(notes)
    inner = facts.ops.get("DEQUANTIZE", 0) + facts.ops.get("QUANTIZE", 0)
    if precision is Precision.int8 and inner > 2:
        notes.append(f"mixed int8/float graph: {inner} QUANTIZE/DEQUANTIZE ops "
                     "(ops without int8 kernels run in float)")
    return Artifact(path, "tflite", precision, facts.inputs, facts.outputs, converter, tuple(notes))


def _precision_of(facts: TfliteFacts) -> Precision:
    """What a file holds: int8 activations -> int8; int8 weights only -> int8-dynamic; fp16 weights -> fp16."""
    if facts.activation_types & {"INT8", "UINT8"}:
        return Precision.int8
    if "INT8" in facts.weight_types:
        return Precision.int8_dynamic
    if "FLOAT16" in facts.weight_types:
        return Precision.fp16
    return Precision.fp32


def _refuse_degenerate(artifact: Artifact, model: nn.Module, converter: str) -> None:
    """Run the new file on two seeded probe images: all-zero or unrelated outputs are a failed conversion."""
    _, c, h, w = canonical_shape(artifact.inputs[0])
    probe = torch.randn((2, c, h, w), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.cat([model(probe[i:i + 1]) for i in range(len(probe))]).float().numpy()
    with LiteRTRunner(artifact) as runner:
        got = runner.infer(probe.numpy())
    cos = np.sum(got * expected, 1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-30)
    problem = None
    if not np.all(np.isfinite(got)):
        problem = "NaN/Inf outputs"
    elif not np.any(got):
        problem = "all-zero outputs"
    elif cos.min() < DYNAMIC_MIN_COSINE:
        problem = f"outputs unrelated to the model (cosine {cos.min():.3f} on a probe input)"
    if problem:
        Path(artifact.path).unlink(missing_ok=True)
        other = next(name for name in CONVERTERS if name != converter)
        raise ConversionError(f"{converter} int8-dynamic produced a broken file ({problem}); "
                              f"try --precision int8 with calibration, fp16, or --converter {other}")


# ---------------------------------------------------------------------------------------------
# litert-torch


def _litert_torch(model: nn.Module, spec: ExportSpec, out_path: Path, calibration: Calibration | None) -> list[str]:
    with _captured_output() as captured:
        try:
            import litert_torch

            nhwc = spec.layout is Layout.nhwc
            module = litert_torch.to_channel_last_io(model, args=[0]).eval() if nhwc else model
            example = (torch.zeros(spec.input_shape),)
            edge_model, notes = LITERT_PRECISIONS[spec.precision](module, example, calibration, nhwc)
            edge_model.export(str(out_path))
        except MvDeployError:
            raise
        except Exception as e:
            raise ConversionError(f"litert-torch {spec.precision.value} conversion failed: "
                                  f"{type(e).__name__}: {_first_line(e)}{_tail(captured())}") from None
    if spec.precision is Precision.int8 and not spec.int8_io:
        out_path.write_bytes(float_io(out_path.read_bytes()))
        notes.append("float32 I/O around the int8 graph (QUANTIZE at the input, DEQUANTIZE at the output)")
    return notes


def _litert_fp32(module, example, calibration, nhwc):
    import litert_torch
    return litert_torch.convert(module, example), []


def _litert_fp16(module, example, calibration, nhwc):
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes
    return (litert_torch.convert(module, example, quant_config=quant_recipes.full_fp16_recipe()),
            ["fp16 weights of conv and fully-connected ops (dequantized at load); float32 compute and I/O"])


def _litert_int8_dynamic(module, example, calibration, nhwc):
    import litert_torch
    from litert_torch.generative.quantize import quant_recipes
    return (litert_torch.convert(module, example, quant_config=quant_recipes.full_dynamic_recipe()),
            ["int8-dynamic: int8 per-channel weights, activations quantized at run time; float32 I/O"])


def _litert_int8(module, example, calibration, nhwc):
    """Static PTQ through torchao's PT2E flow with the quantizer litert-torch lowers to TFLite int8."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(module, example).module()
    prepared = prepare_pt2e(graph, quantizer)
    seen = 0
    with torch.no_grad():
        for batch in calibration.batches:
            _check_calibration_batch(batch, example[0], nhwc)
            for image in batch:                                      # the graph is exported at batch 1
                image = image.unsqueeze(0).float()
                prepared(image.permute(0, 2, 3, 1) if nhwc else image)
                seen += 1
    if seen == 0:
        raise CalibrationRequiredError("the calibration data holds no images; pass --calib-data DIR or --calib-data synthetic")
    quantized = convert_pt2e(prepared, fold_quantize=False)
    edge_model = litert_torch.convert(quantized, example,
                                      quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    return edge_model, [f"int8 static (PT2E, per-channel weights) calibrated on {_calibration_source(calibration, seen)}"]


LITERT_PRECISIONS: dict[Precision, Callable] = {
    Precision.fp32: _litert_fp32,
    Precision.fp16: _litert_fp16,
    Precision.int8: _litert_int8,
    Precision.int8_dynamic: _litert_int8_dynamic,
}


# ---------------------------------------------------------------------------------------------
# onnx2tf


# precision -> (extra onnx2tf arguments, the output file to keep for float I/O, ... for int8 I/O)
ONNX2TF_OUTPUTS: dict[Precision, tuple[tuple[str, ...], str, str | None]] = {
    Precision.fp32: ((), "model_float32.tflite", None),
    Precision.fp16: ((), "model_float16.tflite", None),
    Precision.int8: (("-oiqt", "-qt", "per-channel", "-iqd", "int8", "-oqd", "int8"),
                     "model_integer_quant.tflite", "model_full_integer_quant.tflite"),
    Precision.int8_dynamic: (("-odrqt",), "model_dynamic_range_quant.tflite", None),
}


def _onnx2tf(model: nn.Module, spec: ExportSpec, out_path: Path, calibration: Calibration | None) -> list[str]:
    if importlib.util.find_spec("onnx2tf") is None:
        from mobilevit_deploy.errors import TargetUnavailableError
        raise TargetUnavailableError("the onnx2tf converter needs onnx2tf (not importable); run make install")
    extra_args, float_io_name, int8_io_name = ONNX2TF_OUTPUTS[spec.precision]
    produced_name = int8_io_name if spec.int8_io else float_io_name
    notes = [f"onnx2tf {_version('onnx2tf')} from ONNX opset {ONNX_OPSET}"]

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
        np.save(work / ONNX2TF_SAMPLE_FILE, _onnx2tf_sample(images))
        args = [sys.executable, "-m", "onnx2tf", "-i", "model.onnx", "-o", "out", "-v", "error", *extra_args,
                "-cind", ONNX_INPUT, "inputs.npy", "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]"]
        if spec.precision is Precision.int8:
            notes.append(f"int8 static (per-channel weights) calibrated on {_calibration_source(calibration, len(images))}")
        log = _run_onnx2tf(args, work)

        produced = work / "out" / produced_name
        if not produced.is_file():
            raise ConversionError(f"onnx2tf did not write {produced_name}{_tail(log)}")
        data = produced.read_bytes()
    if spec.layout is Layout.nchw:
        data = nchw_input(data)
        notes.append("onnx2tf builds NHWC; a TRANSPOSE in front takes the NCHW input")
    out_path.write_bytes(data)
    return notes


def _export_onnx(model: nn.Module, image_size: int, path: Path) -> None:
    example = torch.zeros(1, 3, image_size, image_size)
    with _captured_output() as captured:
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[ONNX_INPUT], output_names=["logits"])
        except Exception as e:
            raise ConversionError(f"ONNX export for onnx2tf failed: {type(e).__name__}: {_first_line(e)}"
                                  f"{_tail(captured())}") from None


def _run_onnx2tf(args: list[str], work: Path) -> str:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])   # its `onnxsim` step
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[proxy] = "http://127.0.0.1:9"      # belt and braces: any download attempt fails at once
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=ONNX2TF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"onnx2tf did not finish within {ONNX2TF_TIMEOUT_S} s") from None
    log = done.stdout + done.stderr
    if done.returncode != 0:
        signal_note = f" (killed by signal {-done.returncode})" if done.returncode < 0 else ""
        raise ConversionError(f"onnx2tf failed with exit code {done.returncode}{signal_note}{_tail(log)}")
    return log


def _onnx2tf_sample(images: np.ndarray) -> np.ndarray:
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
        _check_calibration_batch(batch, torch.zeros(1, 3, image_size, image_size), nhwc=False)
        batches.append(batch.float().permute(0, 2, 3, 1).numpy())
    if not batches:
        raise CalibrationRequiredError("the calibration data holds no images; pass --calib-data DIR or --calib-data synthetic")
    return np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)


CONVERTERS: dict[str, Callable[[nn.Module, ExportSpec, Path, Calibration | None], list[str]]] = {
    "litert-torch": _litert_torch,
    "onnx2tf": _onnx2tf,
}


# ---------------------------------------------------------------------------------------------
# Interface rewrites on the flatbuffer (object API of ai_edge_litert's schema)


def float_io(data: bytes) -> bytes:
    """An int8-I/O model with float32 I/O: a QUANTIZE in front of each int8 input, a DEQUANTIZE behind each output."""
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    remap = {}
    for k, old in enumerate(graph.inputs):
        if graph.tensors[old].type == schema.TensorType.INT8:
            new = _add_tensor(model, graph, old, "_float", schema.TensorType.FLOAT32, keep_quantization=False)
            graph.operators.insert(0, _op(model, schema.BuiltinOperator.QUANTIZE, [new], [old]))
            graph.inputs[k] = remap[old] = new
    for k, old in enumerate(graph.outputs):
        if graph.tensors[old].type == schema.TensorType.INT8:
            new = _add_tensor(model, graph, old, "_float", schema.TensorType.FLOAT32, keep_quantization=False)
            graph.operators.append(_op(model, schema.BuiltinOperator.DEQUANTIZE, [old], [new]))
            graph.outputs[k] = remap[old] = new
    return _write_model(model, remap)


def nchw_input(data: bytes) -> bytes:
    """An NHWC-input model that takes NCHW: a TRANSPOSE(perm 0,3,1,2 inverse) in front of the input."""
    from ai_edge_litert import schema_py_generated as schema

    model, graph = _read_model(data)
    old = graph.inputs[0]
    n, h, w, c = graph.tensors[old].shape
    new = _add_tensor(model, graph, old, "_nchw", graph.tensors[old].type, keep_quantization=True, shape=[n, c, h, w])
    perm = _add_constant(model, graph, "nchw_to_nhwc_perm", np.array([0, 2, 3, 1], dtype=np.int32))
    op = _op(model, schema.BuiltinOperator.TRANSPOSE, [new, perm], [old])
    op.builtinOptionsType = schema.BuiltinOptions.TransposeOptions
    op.builtinOptions = schema.TransposeOptionsT()
    graph.operators.insert(0, op)
    graph.inputs[0] = new
    return _write_model(model, {old: new})


def _read_model(data: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    if len(model.subgraphs) != 1:
        raise ConversionError(f"expected a single-subgraph model, found {len(model.subgraphs)} subgraphs")
    return model, model.subgraphs[0]


def _write_model(model, remap: dict[int, int]) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    for signature in model.signatureDefs or []:
        for tensor_map in list(signature.inputs or []) + list(signature.outputs or []):
            tensor_map.tensorIndex = remap.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _add_tensor(model, graph, like: int, suffix: str, tensor_type: int, keep_quantization: bool,
                shape: list[int] | None = None) -> int:
    from ai_edge_litert import schema_py_generated as schema

    src = graph.tensors[like]
    tensor = schema.TensorT()
    tensor.shape = list(shape if shape is not None else src.shape)
    tensor.type = tensor_type
    tensor.buffer = _add_buffer(model, None)
    name = src.name.decode() if isinstance(src.name, bytes) else (src.name or f"tensor_{like}")
    tensor.name = name + suffix
    tensor.quantization = src.quantization if keep_quantization else None
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _add_constant(model, graph, name: str, value: np.ndarray) -> int:
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.shape = list(value.shape)
    tensor.type = {np.dtype(np.int32): schema.TensorType.INT32}[value.dtype]
    tensor.buffer = _add_buffer(model, value)
    tensor.name = name
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _add_buffer(model, value: np.ndarray | None) -> int:
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    if value is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _op(model, builtin: int, inputs: list[int], outputs: list[int]):
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, builtin)
    op.inputs, op.outputs = list(inputs), list(outputs)
    return op


def _opcode(model, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if not code.customCode and max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


# ---------------------------------------------------------------------------------------------
# Small helpers


def _check_calibration_batch(batch: torch.Tensor, example: torch.Tensor, nhwc: bool) -> None:
    expected = tuple(example.shape[1:]) if not nhwc else (example.shape[3], example.shape[1], example.shape[2])
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ConversionError(f"calibration batch of shape {tuple(batch.shape)} does not fit the model input "
                              f"[B, {', '.join(map(str, expected))}] (calibrate at the export image size)")


def _calibration_source(calibration: Calibration, samples: int) -> str:
    return f"{calibration.source} ({samples} images)"


@contextlib.contextmanager
def _captured_output():
    """Converters are chatty (progress lines, tqdm, MLIR diagnostics on fd 2). Keep their output,
    Python-level and native, out of the user's terminal; yield a function returning it for errors."""
    sink = tempfile.TemporaryFile()
    buffer = io.StringIO()
    saved_env = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = (os.dup(1), os.dup(2))
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)

    def captured() -> str:
        sink.seek(0)
        return buffer.getvalue() + sink.read().decode("utf-8", "replace")

    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield captured
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        sink.close()
        if saved_env is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved_env


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _tail(log: str, lines: int = 3) -> str:
    """The last meaningful lines of a converter's output, for an error message."""
    noise = ("I0000", "W0000", "WARNING: All log", "INFO:", "  warnings.warn", "Saved artifact", "  ")
    kept = [line.strip() for line in log.splitlines()
            if line.strip() and not line.startswith(noise) and "oneDNN" not in line]
    return f" ({' | '.join(kept[-lines:])})" if kept else ""


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return "(unknown version)"


TARGET = TFLiteTarget()
