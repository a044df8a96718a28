"""The ExecuTorch runner: `executorch.runtime` in a worker process, fed the canonical NCHW float32.

Why a worker process: the runtime and its XNNPACK delegate are native code, and a bad .pte can
abort or segfault them. In the worker that is a failed check naming the signal; in-process it would
kill the CLI. The worker (executorch_worker.py) loads the program once when the runner opens and
answers requests in the LiteRT worker's protocol (litert_protocol.py) until the runner closes.

.pte files from mvdeploy take and return float32 NCHW (int8 files quantize inside the graph), so
this side only checks that the program's input is what the artifact says it is.
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
from ..formats.pte import SCALAR_TYPES, read_pte
from ..spec import Artifact
from ..versions import version_of
from .base import Runner
from .litert_protocol import read_message, write_message

WORKER_TIMEOUT_S = 600.0     # one request (load or one inference); a hung runtime is an error
WORKER_COMMAND = "from mobilevit_deploy.runners.executorch_worker import serve; serve()"
# Lines the runtime prints on every run that never explain a crash.
STDERR_NOISE = ("[cpuinfo_utils.cpp", "[XNNPACKBackend.cpp", "[program.cpp", "[method.cpp:")


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, artifact: Artifact, *, num_threads: int = 2, timeout_s: float = WORKER_TIMEOUT_S):
        super().__init__(artifact)
        self.num_threads = num_threads
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._exit_reason: str | None = None
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
        _, arrays = self._request({"op": "infer"}, [np.ascontiguousarray(x, dtype=np.float32)])
        if not arrays:
            raise ArtifactError(f"{self.artifact.path}: the forward method returned no outputs")
        return arrays[0].astype(np.float32, copy=False)

    def time_inference(self, image: np.ndarray, repeats: int, warmup: int = 3) -> list[float]:
        """Milliseconds of `execute()` alone, timed inside the worker (no pipe round trip)."""
        self._require_active()
        x = np.ascontiguousarray(np.asarray(image, dtype=np.float32)[:1])
        reply, _ = self._request({"op": "time", "repeats": int(repeats), "warmup": int(warmup)}, [x])
        return reply["times_ms"]

    # -- the worker process --------------------------------------------------------------------

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._stderr = tempfile.TemporaryFile()
        self._exit_reason = None
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", WORKER_COMMAND], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0)
        except OSError as e:
            raise ArtifactError(f"cannot start the ExecuTorch worker process: {e}") from None

    def _request(self, header: dict, arrays: list[np.ndarray] = ()) -> tuple[dict, list[np.ndarray]]:
        proc = self._proc
        if proc is None:
            raise ArtifactError(f"ExecuTorch worker for {self.artifact.path} is not running"
                                + (f" ({self._exit_reason})" if self._exit_reason else "; use the runner in a with-block"))
        try:
            write_message(proc.stdin, header, arrays)
            reply, out = read_message(proc.stdout, self.timeout_s)
        except TimeoutError:
            self._fail(f"the ExecuTorch runtime did not answer within {self.timeout_s:.0f} s", kill=True)
        except (OSError, EOFError, ValueError):
            self._fail(self._death_reason())
        if not reply.get("ok"):
            raise ArtifactError(f"ExecuTorch cannot {header['op']} {self.artifact.path}: "
                                f"{reply.get('error', 'unknown error')}")
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
            reason = f"the ExecuTorch runtime crashed with {signame}"
        else:
            reason = f"the ExecuTorch worker exited with code {code}"
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
        kept = [line.strip() for line in text.splitlines()
                if line.strip() and not line.startswith(STDERR_NOISE) and "Failed to load" not in line]
        return " | ".join(kept[-lines:])
