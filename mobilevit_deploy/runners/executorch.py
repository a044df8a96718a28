"""The ExecuTorch runner: `executorch.runtime` in a worker process, fed the canonical NCHW float32.

Why a worker process: the runtime and its XNNPACK delegate are native code, and a bad .pte can
abort or segfault them. In the worker that is a failed check naming the signal; in-process it would
kill the CLI. The worker (executorch_worker.py) loads the program once when the runner opens and
answers requests in the protocol every worker engine speaks (worker_protocol.py) until the runner closes.

.pte files from mvdeploy take and return float32 NCHW (int8 files quantize inside the graph), so
this side only validates that the program's input is what the artifact says it is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..formats.pte import SCALAR_TYPES, read_pte
from ..spec import Artifact
from ..versions import version_of
from .base import engine_threads
from .worker import WORKER_TIMEOUT_S, WorkerRunner


class ExecuTorchRunner(WorkerRunner):
    name = "executorch"
    worker_module = "mobilevit_deploy.runners.executorch_worker"
    label = "ExecuTorch"
    engine_label = "the ExecuTorch runtime"
    # Lines the runtime prints on every run that never explain a crash.
    stderr_noise = ("[cpuinfo_utils.cpp", "[XNNPACKBackend.cpp", "[program.cpp", "[method.cpp:")
    stderr_noise_anywhere = ("Failed to load",)

    def __init__(self, artifact: Artifact, *, num_threads: int | None = None, timeout_s: float = WORKER_TIMEOUT_S):
        super().__init__(artifact, timeout_s)
        self.num_threads = num_threads or engine_threads()
        self.threads: int | None = None    # the thread pool size the worker reports after load
        self.inputs: list[dict] = []       # the runtime's own view: shape, dtype (ScalarType code)
        self.outputs: list[dict] = []

    @property
    def engine(self) -> str:
        threads = self.threads if self.threads is not None else self.num_threads
        return f"executorch {version_of('executorch')} runtime (CPU, XNNPACK delegate + portable kernels, {threads} threads)"

    # -- lifecycle -----------------------------------------------------------------------------

    def _open(self) -> None:
        path = Path(self.artifact.path)
        read_pte(path)                     # a corrupt file is one readable error, not a native abort
        self._start()
        try:
            reply, _ = self._request({"op": "load", "path": str(path), "num_threads": self.num_threads})
            self.inputs, self.outputs, self.threads = reply["inputs"], reply["outputs"], reply["threads"]
            if len(self.inputs) != 1 or tuple(self.inputs[0]["shape"]) != tuple(self.input_shape):
                raise ArtifactError(f"{path}: expected one input {list(self.input_shape)}, the runtime sees "
                                    f"{[i['shape'] for i in self.inputs]}")
            dtype = SCALAR_TYPES.get(self.inputs[0]["dtype"])
            if dtype != "float32":
                raise ArtifactError(f"{path}: the input is {dtype}; this runner feeds float32 images")
        except BaseException:
            self._close()      # never leave a worker behind
            raise

    # -- inference -----------------------------------------------------------------------------

    def _infer(self, x: np.ndarray) -> np.ndarray:
        _, arrays = self._request({"op": "infer"}, [np.ascontiguousarray(x, dtype=np.float32)])
        if not arrays:
            raise ArtifactError(f"{self.artifact.path}: the forward method returned no outputs")
        return arrays[0].astype(np.float32, copy=False)

    def _infer_intermediates(self, x: np.ndarray, names: list) -> dict:
        """The method's outputs at the positions asked for (a copy whose delegates hand out their values:
        formats/pte_expose.py), as the runtime returns them."""
        _, arrays = self._request({"op": "infer"}, [np.ascontiguousarray(x, dtype=np.float32)])
        return {k: arrays[int(k)] for k in names}

    def _time_inference(self, image: np.ndarray, repeats: int, warmup: int) -> list[float]:
        """Milliseconds of `execute()` alone, timed inside the worker (no pipe round trip)."""
        x = np.ascontiguousarray(np.asarray(image, dtype=np.float32)[:1])
        reply, _ = self._request({"op": "time", "repeats": int(repeats), "warmup": int(warmup)}, [x])
        return reply["times_ms"]
