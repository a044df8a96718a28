"""The LiteRT runner: `ai_edge_litert`'s interpreter in a worker process, fed the canonical NCHW float32.

Why a worker process: the interpreter is native code, and a bad or unlucky .tflite can abort or
segfault it (onnx2tf's int16-activation files do). In the worker that is a failed check naming the
signal; in-process it would kill the CLI. The worker (litert_worker.py) is started when the runner
opens, loads the model once and answers requests (litert_protocol.py) until the runner closes.

This side owns the layout (NHWC files get a transposed feed) and integer I/O (quantize the feed,
dequantize the logits with the interpreter's own scale and zero point). Files with ops the
interpreter cannot run are refused by name (formats/tflite.py) before a worker is started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..formats.tflite import read_tflite, refuse_custom_ops
from ..spec import Artifact
from ..versions import version_of
from .base import Runner
from .litert_protocol import read_message, write_message

WORKER_TIMEOUT_S = 600.0     # one request (load or one inference); a hung interpreter is an error
WORKER_COMMAND = "from mobilevit_deploy.runners.litert_worker import serve; serve()"
# Lines the interpreter prints on every run that never explain a crash.
STDERR_NOISE = ("INFO: Created TensorFlow Lite", "WARNING: All log messages", "ERROR: Subgraph reshaping")


class LiteRTRunner(Runner):
    name = "litert"

    def __init__(self, artifact: Artifact, *, num_threads: int = 2, preserve_all_tensors: bool = False,
                 timeout_s: float = WORKER_TIMEOUT_S):
        super().__init__(artifact)
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
        delegate = "reference kernels" if self.preserve_all_tensors else "XNNPACK"
        return (f"ai-edge-litert {version_of('ai-edge-litert')} interpreter "
                f"(CPU, {self.num_threads} threads, {delegate})")

    # -- lifecycle -----------------------------------------------------------------------------

    def _open(self) -> None:
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
            self._close()      # never leave a worker behind
            raise

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    write_message(proc.stdin, {"op": "quit"})
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

    def _infer(self, x: np.ndarray) -> np.ndarray:
        _, arrays = self._request({"op": "infer"}, [self._feed(x)])
        out = arrays[0]
        spec = self.outputs[0]
        return _dequantize(out, spec) if spec["scale"] else out.astype(np.float32)

    def time_inference(self, image: np.ndarray, repeats: int, warmup: int = 3) -> list[float]:
        """Milliseconds of `invoke()` alone, timed inside the worker (no pipe round trip)."""
        self._require_active()
        reply, _ = self._request({"op": "time", "repeats": int(repeats), "warmup": int(warmup)},
                                 [self._feed(np.asarray(image, dtype=np.float32)[:1])])
        return reply["times_ms"]

    def delegation(self) -> dict:
        """{"ops": N, "delegated": D, "not_delegated": {op name: count}}: what XNNPACK takes of the graph."""
        self._require_active()
        reply, _ = self._request({"op": "delegation", "path": str(self.artifact.path), "num_threads": self.num_threads})
        return {"ops": reply["ops"], "delegated": reply["delegated"], "not_delegated": reply["not_delegated"]}

    def tensor_details(self) -> list[dict]:
        """Every tensor the interpreter holds: index, name, shape, dtype, scale, zero_point."""
        self._require_active()
        reply, _ = self._request({"op": "tensor_details"})
        return reply["tensors"]

    def tensor(self, index: int) -> np.ndarray:
        """A tensor's value after the last inference (intermediates need preserve_all_tensors=True)."""
        self._require_active()
        _, arrays = self._request({"op": "tensor", "index": int(index)})
        return arrays[0]

    def op_details(self) -> list[dict]:
        """Every op in execution order: index, op_name, inputs and outputs (tensor indices)."""
        self._require_active()
        reply, _ = self._request({"op": "ops"})
        return reply["ops"]

    def infer_tensors(self, x: np.ndarray, indices: list[int]) -> list[np.ndarray]:
        """One canonical image [1, 3, H, W] -> the tensors asked for, as the interpreter holds them
        (layout and dtype unchanged; intermediates need preserve_all_tensors=True)."""
        self._require_active()
        _, arrays = self._request({"op": "infer_tensors", "indices": [int(i) for i in indices]},
                                  [self._feed(np.asarray(x, dtype=np.float32)[:1])])
        return arrays

    def _feed(self, x: np.ndarray) -> np.ndarray:
        """Canonical [1, 3, H, W] float32 -> what the interpreter's input takes (layout, int8)."""
        spec = self.inputs[0]
        if self._nhwc:
            x = x.transpose(0, 2, 3, 1)                          # [1, H, W, 3]
        x = _quantize(x, spec) if spec["scale"] else x.astype(spec["dtype"], copy=False)
        return np.ascontiguousarray(x)

    @property
    def _nhwc(self) -> bool:
        return tuple(self.inputs[0]["shape"]) != tuple(self.input_shape)

    # -- the worker process --------------------------------------------------------------------

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._stderr = tempfile.TemporaryFile()
        self._exit_reason = None
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", WORKER_COMMAND], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0)
        except OSError as e:
            raise ArtifactError(f"cannot start the LiteRT worker process: {e}") from None

    def _request(self, header: dict, arrays: list[np.ndarray] = ()) -> tuple[dict, list[np.ndarray]]:
        proc = self._proc
        if proc is None:
            raise ArtifactError(f"LiteRT worker for {self.artifact.path} is not running"
                                + (f" ({self._exit_reason})" if self._exit_reason else "; use the runner in a with-block"))
        try:
            write_message(proc.stdin, header, arrays)
            reply, out = read_message(proc.stdout, self.timeout_s)
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
        """Release the dead (or hung) worker and raise; later requests say why it is gone."""
        if kill and self._proc is not None:
            self._proc.kill()
        self._exit_reason = reason
        self._close()
        raise ArtifactError(f"{reason} while running {self.artifact.path}")

    def _stderr_tail(self, lines: int = 3) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(STDERR_NOISE)]
        return " | ".join(kept[-lines:])


def _quantize(x: np.ndarray, spec: dict) -> np.ndarray:
    info = np.iinfo(spec["dtype"])
    q = np.round(x / spec["scale"]) + spec["zero_point"]
    return np.clip(q, info.min, info.max).astype(spec["dtype"])


def _dequantize(q: np.ndarray, spec: dict) -> np.ndarray:
    return ((q.astype(np.float32) - spec["zero_point"]) * spec["scale"]).astype(np.float32)
