"""The LiteRT runner: `ai_edge_litert`'s interpreter in a worker process, fed the canonical NCHW float32.

Why a worker process: the interpreter is native code, and a bad or unlucky .tflite can abort or
segfault it (onnx2tf's int16-activation files do). In the worker that is a failed check naming the
signal; in-process it would kill the CLI. The worker (litert_worker.py) is started when the runner
opens, loads the model once and answers requests (worker_protocol.py) until the runner closes.

This side owns the layout (NHWC files get a transposed feed) and integer I/O (quantize the feed,
dequantize the logits with the interpreter's own scale and zero point). Files with ops the
interpreter cannot run are refused by name (formats/tflite.py) before a worker is started.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..emulation import CpuProfile
from ..errors import ArtifactError
from ..formats.tflite import read_tflite, refuse_custom_ops
from ..spec import Artifact
from ..versions import version_of
from .base import engine_threads
from .worker import WORKER_TIMEOUT_S, WorkerRunner


class LiteRTRunner(WorkerRunner):
    name = "litert"
    worker_module = "mobilevit_deploy.runners.litert_worker"
    label = "LiteRT"
    engine_label = "the LiteRT interpreter"
    # Lines the interpreter prints on every run that never explain a crash.
    stderr_noise = ("INFO: Created TensorFlow Lite", "WARNING: All log messages", "ERROR: Subgraph reshaping")
    worker_env = {"TF_CPP_MIN_LOG_LEVEL": "2"}

    def __init__(self, artifact: Artifact, *, num_threads: int | None = None, preserve_all_tensors: bool = False,
                 timeout_s: float = WORKER_TIMEOUT_S, arm_cpu: CpuProfile | None = None):
        super().__init__(artifact, timeout_s, arm_cpu)
        self.num_threads = num_threads or engine_threads()
        self.preserve_all_tensors = preserve_all_tensors   # keep intermediates for tensor() (no XNNPACK)
        self.inputs: list[dict] = []       # the interpreter's own view: name, index, shape, dtype, scale, zero_point
        self.outputs: list[dict] = []

    @property
    def engine(self) -> str:
        delegate = "reference kernels" if self.preserve_all_tensors else "XNNPACK"
        version = self.emulator.version_of("ai-edge-litert") if self.emulator else version_of("ai-edge-litert")
        return (f"ai-edge-litert {version} interpreter "
                f"({self.where}CPU, {self.num_threads} threads, {delegate})")

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

    # -- inference -----------------------------------------------------------------------------

    def _infer(self, x: np.ndarray) -> np.ndarray:
        _, arrays = self._request({"op": "infer"}, [self._feed(x)])
        out = arrays[0]
        details = self.outputs[0]
        return _dequantize(out, details) if details["scale"] else out.astype(np.float32)

    def _time_inference(self, image: np.ndarray, repeats: int, warmup: int) -> list[float]:
        """Milliseconds of `invoke()` alone, timed inside the worker (no pipe round trip)."""
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

    def _infer_intermediates(self, x: np.ndarray, indices: list[int]) -> dict[int, np.ndarray]:
        """The tensors asked for by index (intermediates need preserve_all_tensors=True)."""
        _, arrays = self._request({"op": "infer_intermediates", "indices": [int(i) for i in indices]},
                                  [self._feed(x)])
        return dict(zip(indices, arrays))

    def _feed(self, x: np.ndarray) -> np.ndarray:
        """Canonical [1, 3, H, W] float32 -> what the interpreter's input takes (layout, int8)."""
        details = self.inputs[0]
        if self._nhwc:
            x = x.transpose(0, 2, 3, 1)                          # [1, H, W, 3]
        x = _quantize(x, details) if details["scale"] else x.astype(details["dtype"], copy=False)
        return np.ascontiguousarray(x)

    @property
    def _nhwc(self) -> bool:
        return tuple(self.inputs[0]["shape"]) != tuple(self.input_shape)


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    info = np.iinfo(details["dtype"])
    q = np.round(x / details["scale"]) + details["zero_point"]
    return np.clip(q, info.min, info.max).astype(details["dtype"])


def _dequantize(q: np.ndarray, details: dict) -> np.ndarray:
    return ((q.astype(np.float32) - details["zero_point"]) * details["scale"]).astype(np.float32)
