"""Parity on the phone's kernels: a file run by its engine's ARM64 build on emulated phone CPUs.

`check_artifact` calls `arm64_parity` after the host's run, with the same inputs and the same PyTorch
outputs: one row per CPU profile, held to the same tolerance as the host's, plus how far the ARM64
outputs are from the host's (the kernels differ: NEON, dot-product int8, another requantization).
Wall time under emulation is recorded as the cost of the check, never as a latency.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .emulation import CpuProfile, find_emulator
from .errors import ArtifactError, TargetUnavailableError
from .parity import compare
from .parity.tolerances import Tolerance
from .spec import Artifact


def require_arm64(target, cpus: Sequence[CpuProfile]) -> None:
    """Before any work: the ARM64 engine is installed and runs this target's files (one line if not)."""
    if not cpus:
        return
    if target.arm64_unsupported:
        raise TargetUnavailableError(f"--arch arm64: {target.name} files are not run on ARM64 here: "
                                     f"{target.arm64_unsupported}")
    find_emulator()


def arm64_parity(artifact: Artifact, target, cpus: Sequence[CpuProfile], images: np.ndarray, reference: np.ndarray,
                 host_outputs: np.ndarray, tolerance: Tolerance, trained: bool) -> tuple[list[dict], list[str]]:
    """-> (one row per profile for the report, failures prefixed with the profile). Every parity image runs
    (a subset would hold a top-1 bound to too few images): one emulated inference of mobilevit_xxs takes
    about 0.1 s at 64x64 and 3-18 s at 256x256, so at 256 a check on ARM64 takes minutes."""
    rows, failures = [], []
    for cpu in cpus:
        start = time.perf_counter()
        row = {"arch": "arm64", "profile": cpu.name, "cpu": cpu.what, "emulated": True, "images": len(images)}
        try:
            with target.runner(artifact, arm_cpu=cpu) as runner:
                row.update(engine=runner.engine, machine=runner.machine,
                           dot_product="asimddp" in runner.cpu_features)
                outputs = runner.infer(images)
        except ArtifactError as e:              # a crash of the emulated engine is a failed check naming the signal
            wrong = [str(e)]
            row.update(metrics=None, vs_host=None)
        else:
            metrics = compare(reference, outputs)
            wrong = tolerance.failures(metrics, trained=trained)
            row.update(metrics=metrics.to_dict(), vs_host=compare(host_outputs, outputs).to_dict())
        row.update(failures=wrong, check_seconds=round(time.perf_counter() - start, 1))
        rows.append(row)
        failures += [f"arm64 {cpu.name}: {line}" for line in wrong]
    return rows, failures

