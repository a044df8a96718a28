"""The LiteRT runner: `ai_edge_litert`'s interpreter in a worker process, fed the canonical NCHW float32.

Why a worker process: the interpreter is native code, and a bad or unlucky .tflite can abort or
segfault it (onnx2tf's int16-activation files do). In the worker that is a failed check naming the
signal; in-process it would kill the CLI. The worker is started in `__enter__`, loads the model
once and answers requests until `__exit__`.

The protocol is a pipe of length-prefixed frames: a JSON header, then .npy arrays. The worker moves
its fd 1 to stderr first, so anything native code prints can never corrupt the protocol.

This module also reads .tflite files without running them (`read_tflite`): I/O tensors, op names
and Flex ops, so unrunnable files are refused by name before an interpreter ever sees them.
"""
from __future__ import annotations

import io
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..spec import Artifact, Layout, TensorSpec
from .base import Runner

WORKER_TIMEOUT_S = 600.0     # one request (load or one inference); a hung interpreter is an error
_FRAME = struct.Struct("<Q")

# Custom ops the stock LiteRT op resolver registers; any other custom op cannot run here.
_RESOLVER_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess"})


# ---------------------------------------------------------------------------------------------
# Reading a .tflite without running it


@dataclass(frozen=True)
class TfliteFacts:
    """What a .tflite file declares, read from its flatbuffer (no interpreter involved)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: Counter                          # op name ("CONV_2D", "FlexErf") -> count, all subgraphs
    custom_codes: frozenset[str]          # names of the custom (non-builtin) op codes
    weight_types: frozenset[str]          # types of constant tensors ("FLOAT32", "INT8", "FLOAT16")
    activation_types: frozenset[str]      # types of non-constant tensors

    @property
    def custom_ops(self) -> list[str]:
        """Custom ops the stock interpreter cannot run: Flex (TensorFlow Select) ops and the like."""
        return sorted(op for op in self.custom_codes if op not in _RESOLVER_CUSTOM_OPS)


def read_tflite(path: Path) -> TfliteFacts:
    """Parse the flatbuffer: subgraph 0's I/O tensors (shape, dtype, quantization) and every op name."""
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = schema.Model.GetRootAs(data, 0)
        return _facts(model, schema)
    except ArtifactError:
        raise
    except Exception as e:       # a truncated or corrupt flatbuffer: struct/index errors from the reader
        raise ArtifactError(f"{path} is not a readable TFLite model ({type(e).__name__}: {e})") from None


def _facts(model, schema) -> TfliteFacts:
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names, custom = [], set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.CustomCode():
            op_names.append(code.CustomCode().decode("utf-8", "replace"))
            custom.add(op_names[-1])
        else:
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            op_names.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))

    ops: Counter = Counter()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for j in range(graph.OperatorsLength()):
            ops[op_names[graph.Operators(j).OpcodeIndex()]] += 1

    if model.SubgraphsLength() == 0:
        raise ArtifactError("the model has no subgraph")
    graph = model.Subgraphs(0)

    def is_constant(tensor) -> bool:
        b = tensor.Buffer()
        if b <= 0 or b >= model.BuffersLength():
            return False
        buf = model.Buffers(b)
        return buf.DataLength() > 0 or buf.Offset() > 1

    weights, activations = set(), set()
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        (weights if is_constant(tensor) else activations).add(type_names.get(tensor.Type(), str(tensor.Type())))

    def spec(index: int, is_input: bool) -> TensorSpec:
        tensor = graph.Tensors(index)
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        dtype = type_names.get(tensor.Type(), str(tensor.Type())).lower()
        scale = zero_point = None
        q = tensor.Quantization()
        if q is not None and q.ScaleLength() == 1 and dtype in ("int8", "uint8", "int16"):
            scale, zero_point = float(q.Scale(0)), int(q.ZeroPoint(0))
        layout = None
        if is_input and len(shape) == 4:
            layout = Layout.nhwc if shape[-1] == 3 and shape[1] != 3 else Layout.nchw
        name = tensor.Name().decode("utf-8", "replace") if tensor.Name() else f"tensor_{index}"
        return TensorSpec(name, shape, dtype, layout, scale, zero_point)

    inputs = tuple(spec(int(i), True) for i in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    outputs = tuple(spec(int(i), False) for i in graph.OutputsAsNumpy()) if graph.OutputsLength() else ()
    return TfliteFacts(inputs, outputs, ops, frozenset(custom), frozenset(weights), frozenset(activations))


def refuse_custom_ops(path: Path, facts: TfliteFacts) -> None:
    """ArtifactError naming the ops, before any interpreter is asked to run them."""
    custom = facts.custom_ops
    if not custom:
        return
    flex = [op for op in custom if op.startswith("Flex")]
    what = "Flex (TensorFlow Select) ops" if len(flex) == len(custom) else "custom ops"
    raise ArtifactError(
        f"{path} uses {what} the LiteRT interpreter cannot run: {', '.join(custom)}"
        + (" (they need the TensorFlow Flex delegate; convert without SELECT_TF_OPS)" if flex else "")
    )


# ---------------------------------------------------------------------------------------------
# The runner (parent side)


def canonical_shape(spec: TensorSpec) -> tuple[int, int, int, int]:
    """[1, 3, H, W] for an input declared NCHW or NHWC."""
    n, a, b, c = spec.shape
    return (n, c, a, b) if spec.layout is Layout.nhwc else (n, a, b, c)


class LiteRTRunner(Runner):
    name = "litert"

    def __init__(self, artifact: Artifact, num_threads: int = 2, preserve_all_tensors: bool = False,
                 timeout_s: float = WORKER_TIMEOUT_S):
        spec = artifact.inputs[0]
        if len(spec.shape) != 4:
            raise ArtifactError(f"{artifact.path}: expected one image input [1, 3, H, W] or [1, H, W, 3], got {spec.shape}")
        super().__init__(canonical_shape(spec))
        self.artifact = artifact
        self.num_threads = num_threads
        self.preserve_all_tensors = preserve_all_tensors   # keep intermediates for tensor() (no XNNPACK)
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._exit_reason: str | None = None
        self.inputs: list[dict] = []       # the interpreter's own view: name, index, shape, dtype, scale, zero_point
        self.outputs: list[dict] = []

    @property
    def engine(self) -> str:
        from importlib.metadata import version
        delegate = "reference kernels" if self.preserve_all_tensors else "XNNPACK"
        return f"ai-edge-litert {version('ai-edge-litert')} interpreter (CPU, {self.num_threads} threads, {delegate})"

    def __enter__(self) -> "LiteRTRunner":
        path = Path(self.artifact.path)
        refuse_custom_ops(path, read_tflite(path))
        self._start()
        try:
            reply, _ = self._request({"op": "load", "path": str(path), "num_threads": self.num_threads,
                                      "preserve_all_tensors": self.preserve_all_tensors})
            self.inputs, self.outputs = reply["inputs"], reply["outputs"]
            if len(self.inputs) != 1 or len(self.inputs[0]["shape"]) != 4:
                raise ArtifactError(f"{path}: expected one 4-D image input, the interpreter sees "
                                    f"{[tuple(i['shape']) for i in self.inputs]}")
        except BaseException:
            self.__exit__(None, None, None)      # never leave a worker behind
            raise
        return self

    def __exit__(self, *exc) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    _write_frames(proc.stdin, [json.dumps({"op": "quit"}).encode()])
                    proc.stdin.close()
                    proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- inference -----------------------------------------------------------------------------

    def _feed(self, x: np.ndarray) -> np.ndarray:
        """Canonical [1, 3, H, W] float32 -> what the interpreter's input takes (layout, int8)."""
        spec = self.inputs[0]
        if self._nhwc:
            x = x.transpose(0, 2, 3, 1)                          # [1, H, W, 3]
        x = _quantize(x, spec) if spec["scale"] else x.astype(spec["dtype"], copy=False)
        return np.ascontiguousarray(x)

    def time_inference(self, image: np.ndarray, repeats: int, warmup: int = 3) -> list[float]:
        """Milliseconds of `invoke()` alone, timed inside the worker (no pipe round trip)."""
        reply, _ = self._request({"op": "time", "repeats": int(repeats), "warmup": int(warmup)},
                                 [self._feed(np.asarray(image, dtype=np.float32)[:1])])
        return reply["times_ms"]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        _, arrays = self._request({"op": "infer"}, [self._feed(x)])
        out = arrays[0]
        spec = self.outputs[0]
        return _dequantize(out, spec) if spec["scale"] else out.astype(np.float32)

    @property
    def _nhwc(self) -> bool:
        return tuple(self.inputs[0]["shape"]) != tuple(self.input_shape)

    def tensor_details(self) -> list[dict]:
        """Every tensor the interpreter holds: index, name, shape, dtype, scale, zero_point."""
        reply, _ = self._request({"op": "tensor_details"})
        return reply["tensors"]

    def tensor(self, index: int) -> np.ndarray:
        """A tensor's value after the last inference (intermediates need preserve_all_tensors=True)."""
        _, arrays = self._request({"op": "tensor", "index": int(index)})
        return arrays[0]

    def _simulate_crash(self, sig: int = signal.SIGABRT) -> None:
        """Test hook: the worker kills itself with `sig`, as a native crash would."""
        self._request({"op": "die", "signal": int(sig)})

    # -- the worker process --------------------------------------------------------------------

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._stderr = tempfile.TemporaryFile()
        self._exit_reason = None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from mobilevit_deploy.runners.litert import _serve; _serve()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0,
            )
        except OSError as e:
            raise ArtifactError(f"cannot start the LiteRT worker process: {e}") from None

    def _request(self, header: dict, arrays: list[np.ndarray] = ()) -> tuple[dict, list[np.ndarray]]:
        proc = self._proc
        if proc is None:
            raise ArtifactError(f"LiteRT worker for {self.artifact.path} is not running"
                                + (f" ({self._exit_reason})" if self._exit_reason else "; use the runner in a with-block"))
        header = {**header, "arrays": len(arrays)}
        try:
            _write_frames(proc.stdin, [json.dumps(header).encode(), *(_npy_bytes(a) for a in arrays)])
            reply = json.loads(_read_frame(proc.stdout, self.timeout_s))
            out = [np.load(io.BytesIO(_read_frame(proc.stdout, self.timeout_s))) for _ in range(reply.get("arrays", 0))]
        except TimeoutError:
            self._fail(f"the LiteRT interpreter did not answer within {self.timeout_s:.0f} s", kill=True)
        except (OSError, EOFError, ValueError):
            self._fail(self._death_reason())
        if not reply.get("ok"):
            raise ArtifactError(f"LiteRT cannot {header['op']} {self.artifact.path}: {reply.get('error', 'unknown error')}")
        return reply, out

    def _death_reason(self) -> str:
        proc = self._proc
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
            reason = f"the LiteRT interpreter crashed with {signame}"
        else:
            reason = f"the LiteRT worker exited with code {code}"
        tail = self._stderr_tail()
        return reason + (f" (last output: {tail})" if tail else "")

    def _fail(self, reason: str, kill: bool = False) -> None:
        if kill and self._proc is not None:
            self._proc.kill()
        self._exit_reason = reason
        self.__exit__(None, None, None)
        raise ArtifactError(f"{reason} while running {self.artifact.path}")

    def _stderr_tail(self, lines: int = 3) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        noise = ("INFO: Created TensorFlow Lite", "WARNING: All log messages", "ERROR: Subgraph reshaping")
        kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(noise)]
        return " | ".join(kept[-lines:])


def _quantize(x: np.ndarray, spec: dict) -> np.ndarray:
    info = np.iinfo(spec["dtype"])
    q = np.round(x / spec["scale"]) + spec["zero_point"]
    return np.clip(q, info.min, info.max).astype(spec["dtype"])


def _dequantize(q: np.ndarray, spec: dict) -> np.ndarray:
    return ((q.astype(np.float32) - spec["zero_point"]) * spec["scale"]).astype(np.float32)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_frames(stream, frames: list[bytes]) -> None:
    for frame in frames:
        stream.write(_FRAME.pack(len(frame)))
        stream.write(frame)
    stream.flush()


def _read_exact(stream, n: int, timeout_s: float | None) -> bytes:
    chunks, remaining, fd = [], n, stream.fileno()
    while remaining:
        if timeout_s is not None:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream, timeout_s: float | None = None) -> bytes:
    (length,) = _FRAME.unpack(_read_exact(stream, _FRAME.size, timeout_s))
    return _read_exact(stream, length, timeout_s)


# ---------------------------------------------------------------------------------------------
# The worker (child side)


def _serve() -> None:
    """Worker main loop: read a request, answer it, until "quit" or end of input."""
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                    # native prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    protocol_in = sys.stdin.buffer
    interpreter = None
    while True:
        try:
            header = json.loads(_read_frame(protocol_in))
        except EOFError:
            return
        op = header["op"]
        arrays = [np.load(io.BytesIO(_read_frame(protocol_in))) for _ in range(header.get("arrays", 0))]
        if op == "quit":
            return
        try:
            if op == "load":
                interpreter = _load(header)
                reply, out = {"inputs": _details(interpreter.get_input_details()),
                              "outputs": _details(interpreter.get_output_details())}, []
            elif op == "infer":
                inp = interpreter.get_input_details()[0]
                interpreter.set_tensor(inp["index"], arrays[0])
                interpreter.invoke()
                reply, out = {}, [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]
            elif op == "time":
                inp = interpreter.get_input_details()[0]
                interpreter.set_tensor(inp["index"], arrays[0])
                for _ in range(header["warmup"]):
                    interpreter.invoke()
                times = []
                for _ in range(header["repeats"]):
                    start = time.perf_counter()
                    interpreter.invoke()
                    times.append((time.perf_counter() - start) * 1e3)
                reply, out = {"times_ms": times}, []
            elif op == "tensor_details":
                reply, out = {"tensors": _details(interpreter.get_tensor_details())}, []
            elif op == "tensor":
                reply, out = {}, [interpreter.get_tensor(header["index"])]
            elif op == "die":
                os.kill(os.getpid(), header["signal"])
                reply, out = {}, []
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as e:       # reported to the parent as an ArtifactError with this message
            message = str(e).strip().splitlines()
            _write_frames(protocol_out, [json.dumps({"ok": False, "error": f"{type(e).__name__}: "
                                                     + (message[0] if message else "")}).encode()])
            continue
        reply.update(ok=True, arrays=len(out))
        _write_frames(protocol_out, [json.dumps(reply).encode(), *(_npy_bytes(a) for a in out)])


def _load(header: dict):
    from ai_edge_litert import interpreter as litert

    options = {"model_path": header["path"], "num_threads": header["num_threads"]}
    if header["preserve_all_tensors"]:
        options["experimental_preserve_all_tensors"] = True
        options["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = litert.Interpreter(**options)
    interpreter.allocate_tensors()
    return interpreter


def _details(details: list[dict]) -> list[dict]:
    out = []
    for d in details:
        scale, zero_point = d.get("quantization", (0.0, 0))
        out.append({"index": int(d["index"]), "name": d["name"], "shape": [int(s) for s in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name, "scale": float(scale) or None,
                    "zero_point": int(zero_point)})
    return out


if __name__ == "__main__":
    _serve()
