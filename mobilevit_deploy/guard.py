"""Process-level care for one CLI run: a private temporary folder, quiet libraries, signals that stop.

- Every run gets its own temporary folder (TMPDIR for us and for every worker or converter process we
  start); it is removed when the run ends, however it ends, so nothing is left in the system's /tmp
  (torch's inductor caches, converters' scratch files).
- Third-party chatter (coremltools' version warnings, TensorFlow/absl logs, Python warnings) is ours to
  keep off the terminal; `verbose=True` lets it through.
- SIGINT and SIGTERM stop the run: the handler raises inside the main thread so every `finally` and
  staging folder cleanup runs; the run then exits 130 / 143 even if some library swallowed the exception.
  Once the command is over its exit status is decided, and a signal while the process exits changes
  nothing (`SignalGuard`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import warnings
from typing import Iterator

# Python loggers of the libraries we drive. Children are named explicitly: torch sets its own top-level
# logger's level when it is imported, and a child with a level of its own keeps it.
CHATTY_LOGGERS = ("coremltools", "absl", "tensorflow", "torch", "torch.utils._pytree", "torch.export",
                  "torch._export", "torch.fx", "torch._dynamo", "torch.onnx", "torchao", "onnx2tf", "onnxscript",
                  "litert_torch", "ai_edge_litert", "ai_edge_quantizer", "jax", "h5py", "executorch")


class Stopped(BaseException):
    """A signal asked the run to stop. BaseException, like KeyboardInterrupt: not an error to handle."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def private_tempdir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="mvdeploy-run-")
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = folder
    tempfile.tempdir = folder
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


def quiet_libraries(verbose: bool) -> None:
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")          # inherited by worker processes
    warnings.simplefilter("ignore")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


class SignalGuard:
    """SIGINT and SIGTERM over one run, with one rule for the exit status at every moment.

    Until `finish()`: a signal raises `Stopped` in the main thread (so every `finally` and staging
    cleanup runs) and is recorded, so a stop that some library swallowed is still a stop (128+N).
    `finish(code)` decides the status once the command is over; from then until the process has
    exited, both signals are ignored (SIG_IGN, which Python keeps through its own shutdown, where a
    handler of ours would be reset to the default and a late Ctrl-C would kill the process)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: list[int] = []
        self.finished = False

    def handle(self, signum, frame) -> None:
        self.received.append(signum)
        if not self.finished:
            raise Stopped(signum)

    def finish(self, code: int) -> int:
        """The run's exit status: `code`, or 128+N when signal N arrived and the command still
        returned 0. Signals that arrive from now on change nothing."""
        self.finished = True
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        return 128 + self.received[0] if self.received and code == 0 else code


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalGuard]:
    """Install the guard's handler; an unfinished guard gives the previous handlers back on the way out,
    a finished one keeps ignoring both signals until the process exits."""
    guard = SignalGuard()
    saved = {s: signal.signal(s, guard.handle) for s in guard.SIGNALS}
    try:
        yield guard
    finally:
        if not guard.finished:
            for s, previous in saved.items():
                signal.signal(s, previous)


@contextlib.contextmanager
def native_chatter_to(folder: str, verbose: bool) -> Iterator[None]:
    """Native libraries (TensorFlow, absl, MLIR) write to file descriptor 2 whatever Python says: point
    fd 2 at a file in `folder` and give Python's sys.stderr the real terminal, so our own lines (and
    progress bars) still reach the user and theirs do not."""
    if verbose:
        yield
        return
    import sys

    sys.stderr.flush()
    real = os.dup(2)
    sink = os.open(os.path.join(folder, "native-stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(sink, 2)
    os.close(sink)
    saved_stderr = sys.stderr
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)
        sys.stderr.close()
        sys.stderr = saved_stderr
