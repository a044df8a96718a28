"""The machine a latency figure was measured on: CPU model, architecture, cores, and the instruction-set
features that change which kernels an engine runs (int8 dot products, fp16 arithmetic, matrix units).

Standard library only: a latency figure without its host says little (engine rankings flip between
machines), so `bench` and the report's latency record `host()` beside their figures.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

# The flags that decide kernels, by the names /proc/cpuinfo gives them (x86 "flags", ARM "Features").
KERNEL_FEATURES = (
    "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
    "amx_tile", "amx_int8", "amx_bf16",                           # x86-64
    "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2", "sme",   # ARM64
)


@dataclass(frozen=True)
class Host:
    cpu: str                      # the model name, as lscpu / /proc/cpuinfo give it
    machine: str                  # x86_64, aarch64, arm64
    cores: int                    # logical CPUs this process may use
    features: tuple[str, ...]     # which of KERNEL_FEATURES the CPU has

    def describe(self) -> str:
        """'AMD EPYC (x86_64, 2 cores; avx2 avx512_vnni ...; no avx_vnni amx_int8)'."""
        x86 = self.machine in ("x86_64", "AMD64")
        asked = ("avx512_vnni", "avx_vnni", "amx_int8") if x86 else ("asimddp", "i8mm", "asimdhp")
        missing = [f for f in asked if f not in self.features]
        return (f"{self.cpu} ({self.machine}, {self.cores} cores; {' '.join(self.features) or 'no listed features'}"
                + (f"; no {' '.join(missing)}" if missing else "") + ")")

    def int8_caveat(self) -> str | None:
        """Why int8 speed measured here is not a phone's, or None on an ARM64 host with dot-product."""
        if self.machine in ("x86_64", "AMD64"):
            vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in self.features]
            return (f"x86-64 int8 kernels ({'with ' + ', '.join(vnni) if vnni else 'no VNNI: int8 barely beats fp32 here'})"
                    ", not the ARM dot-product kernels phones run")
        if "asimddp" not in self.features:
            return "this ARM CPU has no dot-product instructions: int8 runs slower here than on phones since 2019"
        return None

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def host() -> Host:
    """This machine (read once per process)."""
    return parse_cpuinfo(_read_cpuinfo(), platform.machine(), _cores())


def parse_cpuinfo(text: str, machine: str, cores: int) -> Host:
    """A Host from the text of /proc/cpuinfo (or '' where there is none)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    cpu = fields.get("model name") or _arm_cpu(fields) or platform.processor() or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return Host(cpu, machine, cores, tuple(f for f in KERNEL_FEATURES if f in flags))


def _arm_cpu(fields: dict[str, str]) -> str | None:
    part = fields.get("cpu part")
    return f"ARM CPU implementer {fields.get('cpu implementer', '?')} part {part}" if part else None


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # macOS
        return os.cpu_count() or 1
