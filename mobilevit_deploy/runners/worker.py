"""A runner whose engine lives in a worker process: start it, send requests, and turn its death into
an error that names the signal (a native abort or segfault in the engine must not kill the CLI).

Subclasses (LiteRT, ExecuTorch) name their worker module and engine, and open/close the engine with
requests; the framing is worker_protocol.py. Given an ARM CPU profile, the worker is the aarch64 Python
of the ARM64 engine under emulation (emulation.py), running the same worker module: the same requests,
answered by the engine's ARM64 build.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..emulation import CpuProfile, Emulator, find_emulator
from ..errors import ArtifactError
from ..spec import Artifact
from .base import Runner
from .worker_protocol import read_message, write_message

WORKER_TIMEOUT_S = 600.0     # one request (load or one inference); a hung engine is an error


class WorkerRunner(Runner):
    worker_module = ""               # the module whose serve() answers requests
    label = ""                       # "LiteRT": in "LiteRT worker", "LiteRT cannot ..."
    engine_label = ""                # "the LiteRT interpreter": in "... crashed with SIGSEGV"
    stderr_noise: tuple[str, ...] = ()   # line starts the engine prints on every run, never a crash's cause
    stderr_noise_anywhere: tuple[str, ...] = ()
    worker_env: dict[str, str] = {}  # set in the worker's environment unless already set

    def __init__(self, artifact: Artifact, timeout_s: float = WORKER_TIMEOUT_S, arm_cpu: CpuProfile | None = None):
        super().__init__(artifact)
        self.timeout_s = timeout_s
        self.arm_cpu = arm_cpu               # None: the host's build of the engine, natively
        self.emulator: Emulator | None = find_emulator() if arm_cpu is not None else None
        if arm_cpu is not None:
            self.latency_unmeasurable = (f"it runs under emulation (qemu-aarch64 -cpu {arm_cpu.qemu_cpu}): "
                                         "emulated time is not a phone's time")
        self.machine: str | None = None      # what the worker process runs on (platform.machine()), once open
        self.cpu_features: list[str] = []    # the CPU features it sees (the emulated CPU's under qemu)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._exit_reason: str | None = None

    @property
    def where(self) -> str:
        """How the engine runs, for `engine`: '' natively, else the emulated CPU and the emulator."""
        if self.emulator is None:
            return ""
        return f"aarch64 build on an emulated {self.arm_cpu.name} (qemu-aarch64 {self.emulator.qemu_version}), "

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        for key, value in self.worker_env.items():
            env.setdefault(key, value)
        self._stderr = tempfile.TemporaryFile()
        self._exit_reason = None
        python_args = ["-c", f"from {self.worker_module} import serve; serve()"]
        argv = [sys.executable, *python_args]
        if self.emulator is not None:
            argv, env = self.emulator.command(self.arm_cpu, python_args), self.emulator.environment(env)
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0)
        except OSError as e:
            raise ArtifactError(f"cannot start the {self.label} worker process: {e}") from None
        reply, _ = self._request({"op": "machine"})
        self.machine, self.cpu_features = reply["machine"], reply.get("features", [])

    def time_inference(self, image: np.ndarray, repeats: int, warmup: int = 3) -> list[float]:
        """Milliseconds per inference, timed as close to the engine as the subclass can; never under
        emulation."""
        self._require_active()
        if self.emulator is not None:
            raise ArtifactError(f"{self.artifact.path} is not timed on {self.arm_cpu.name}: {self.latency_unmeasurable}")
        return self._time_inference(image, repeats, warmup)

    def _time_inference(self, image: np.ndarray, repeats: int, warmup: int) -> list[float]:
        return super().time_inference(image, repeats, warmup)

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

    def _request(self, header: dict, arrays: list[np.ndarray] = ()) -> tuple[dict, list[np.ndarray]]:
        proc = self._proc
        if proc is None:
            raise ArtifactError(f"{self.label} worker for {self.artifact.path} is not running"
                                + (f" ({self._exit_reason})" if self._exit_reason else "; use the runner in a with-block"))
        try:
            write_message(proc.stdin, header, arrays)
            reply, out = read_message(proc.stdout, self.timeout_s)
        except TimeoutError:
            self._fail(f"{self.engine_label} did not answer within {self.timeout_s:.0f} s", kill=True)
        except (OSError, EOFError, ValueError):
            self._fail(self._death_reason())
        if not reply.get("ok"):
            raise ArtifactError(f"{self.label} cannot {header['op']} {self.artifact.path}: "
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
            reason = f"{self.engine_label} crashed with {signame}"
        else:
            reason = f"the {self.label} worker exited with code {code}"
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
                if line.strip() and not line.startswith(self.stderr_noise)
                and not any(noise in line for noise in self.stderr_noise_anywhere)]
        return " | ".join(kept[-lines:])
