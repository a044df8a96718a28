"""`mvdeploy doctor`: what this install can do, and for what it cannot, the one line that gets it."""
from __future__ import annotations

from dataclasses import dataclass

from .emulation import EmulatorMissingError, find_emulator
from .extras import FEATURES, install_line
from .targets import registry
from .versions import version_of


@dataclass(frozen=True)
class Capability:
    name: str            # "tflite", "Ray"
    kind: str            # "target", "feature" or "engine"
    enables: str         # what it gives, in the CLI's words
    extra: str           # how to get it: pip install "mvdeploy[extra]", or another step
    missing: str | None  # None when usable here; else the one line saying why not

    @property
    def ready(self) -> bool:
        return self.missing is None


def capabilities() -> list[Capability]:
    """Every target (its extra), every feature that is not a target, and the ARM64 engine."""
    rows = []
    for name, target in sorted(registry().items()):
        precisions = ",".join(p.value for p in target.precisions)
        rows.append(Capability(name, "target", f"--target {name} ({precisions})",
                               install_line(getattr(target, "extra", "") or name), target.unavailable_reason()))
    for feature in FEATURES:
        rows.append(Capability(feature.name, "feature", feature.enables, install_line(feature.extra) + feature.also,
                               feature.unavailable_reason()))
    try:
        arm64, missing = f"--arch arm64 (qemu-aarch64 {find_emulator().qemu_version})", None
    except EmulatorMissingError as e:
        arm64, missing = "--arch arm64", str(e)
    rows.append(Capability("ARM64 engine", "engine", arm64,
                           "make install (python scripts/install_arm64.py DIR)", missing))
    return rows


def version_line() -> str:
    """`mvdeploy 0.1.0 (torch 2.13.0, Python 3.11.7)`."""
    import sys

    return (f"mvdeploy {version_of('mvdeploy', 'unknown (not installed)')} (torch {version_of('torch')}, "
            f"Python {sys.version.split()[0]})")
