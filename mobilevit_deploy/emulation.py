"""The ARM64 engine: phone CPUs emulated on this machine, so a file is checked on the kernels a phone runs.

`make install` puts it in `.venv/arm64` (scripts/install_arm64.py): qemu's user-mode emulator, an aarch64
Python with its libraries (the sysroot), and the aarch64 build of the engine's wheels. A worker runner
(runners/worker.py) started through `Emulator.command` is that aarch64 Python running the same worker
module as on the host, speaking the same protocol; what it computes is the ARM64 build's arithmetic
(XNNPACK's NEON kernels, dot-product int8 where the profile has it). Emulated time is not a phone's time:
nothing measured under emulation is ever reported as a latency.

Standard library only.
"""
from __future__ import annotations

import enum
import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import MvDeployError, UnknownNameError

ROOT_ENV = "MVDEPLOY_ARM64_ROOT"     # where the engine is, when not <sys.prefix>/arm64


class Arch(str, enum.Enum):
    """Where a check runs: this machine's build of the engine only, or also its ARM64 build (emulated)."""

    host = "host"
    arm64 = "arm64"


@dataclass(frozen=True)
class CpuProfile:
    """A phone core, as the emulator's CPU model (qemu's -cpu): it decides the features XNNPACK sees."""

    name: str                 # what --arm-cpu takes
    qemu_cpu: str             # qemu-aarch64 -cpu
    what: str                 # for reports


PROFILES = {p.name: p for p in (
    CpuProfile("cortex-a76", "cortex-a76",
               "Cortex-A76 class: ARMv8.2 with dot-product and fp16 arithmetic (most phones since 2019)"),
    CpuProfile("cortex-a53", "cortex-a53",
               "Cortex-A53 class: ARMv8.0, no dot-product, no fp16 arithmetic (older and low-end phones)"),
)}
DEFAULT_PROFILE = "cortex-a76"


def profile(name: str) -> CpuProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownNameError("ARM CPU profile", name, list(PROFILES)) from None


def arm_cpus(arch: Arch | str, names: str | None = None) -> tuple[CpuProfile, ...]:
    """The emulated CPUs a check runs on: none for the host; `names` (comma-separated profiles, default
    DEFAULT_PROFILE) for arm64. Unknown names are refused before any work."""
    if Arch(arch) is Arch.host:
        return ()
    return tuple(profile(name.strip()) for name in (names or DEFAULT_PROFILE).split(",") if name.strip())


class EmulatorMissingError(MvDeployError):
    """--arch arm64 asked for, and the ARM64 engine is not installed."""


@dataclass(frozen=True)
class Emulator:
    """An installed ARM64 engine (the layout scripts/install_arm64.py writes)."""

    root: Path
    qemu_version: str
    wheels: dict              # {distribution: version} of the aarch64 wheels

    @property
    def qemu(self) -> Path:
        return self.root / "qemu-aarch64"

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    def command(self, cpu: CpuProfile, python_args: list[str]) -> list[str]:
        """The aarch64 Python under qemu on `cpu`, with `python_args`."""
        return [str(self.qemu), "-cpu", cpu.qemu_cpu, "-L", str(self.sysroot),
                str(self.sysroot / "usr/bin/python3.11"), *python_args]

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The worker's environment: the aarch64 wheels first on its path (never the host's packages)."""
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        return {**env, "PYTHONPATH": os.pathsep.join([str(self.root / "site"), *paths]), "PYTHONNOUSERSITE": "1"}

    def version_of(self, distribution: str) -> str:
        return self.wheels.get(distribution.replace("-", "_"), "?")


def emulator_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or Path(sys.prefix) / "arm64")


def find_emulator(root: Path | None = None) -> Emulator:
    """The installed ARM64 engine (in `root`, default `emulator_root()`), or EmulatorMissingError with one
    line saying what is missing and how to get it."""
    return _installed(Path(root) if root is not None else emulator_root())


@lru_cache(maxsize=None)
def _installed(root: Path) -> Emulator:
    record = root / "installed.json"
    missing = [p for p in (record, root / "qemu-aarch64", root / "sysroot/usr/bin/python3.11") if not p.exists()]
    if missing:
        raise EmulatorMissingError(
            f"--arch arm64 needs the ARM64 engine (qemu-aarch64 10.x, an aarch64 Python and ai-edge-litert's "
            f"aarch64 wheel) in {root}, and {missing[0].name} is missing: run `make install` "
            f"(or `python scripts/install_arm64.py {root}`)")
    installed = json.loads(record.read_text())
    return Emulator(root, installed["qemu"], installed["wheels"])
