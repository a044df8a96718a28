"""The wheel as a user gets it, and a fresh venv that installs it with chosen extras (tests/test_wheel.py and
benchmarks/install_sizes.py). Nothing from the repository or its .venv is visible inside that venv."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
# What is not the source tree: the build copies everything else, so a file not yet committed is in the wheel
# exactly as `python -m build` in the working tree would put it.
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "mvdeploy-out", "__pycache__",
                                    ".pytest_cache", "*.pyc")


def build_wheel(out: Path) -> Path:
    """`python -m build --wheel` of a copy of the source tree (the build writes build/ and *.egg-info where
    it runs: never into the checkout), without build isolation (setuptools is in .venv); -> the .whl."""
    source = out / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    (wheel,) = out.glob("mvdeploy-*.whl")
    return wheel


def clean_env() -> dict[str, str]:
    """The environment without this checkout (no PYTHONPATH, no active venv), and with bytecode caching."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}   # pip ran --no-compile
    env.pop("MVDEPLOY_VERBOSE", None)
    return env


def fresh_venv(folder: Path, wheel: Path, extras: str = "", report: Path | None = None) -> Path:
    """A new venv at `folder` with `wheel[extras]` installed at constraints.txt's versions (pip's own cache
    and the local package index make it a copy, not a download); -> its bin folder. `report`: where pip
    writes its installation report (what it installed, from where)."""
    python = shutil.which("python3.11") or sys.executable
    subprocess.run([python, "-m", "venv", str(folder)], check=True, capture_output=True, env=clean_env())
    bin_dir = folder / "bin"
    spec = f"{wheel}[{extras}]" if extras else str(wheel)
    result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile",
                             "--disable-pip-version-check", spec, "-c", str(CONSTRAINTS),
                             *(["--report", str(report)] if report else [])],
                            capture_output=True, text=True, env=clean_env())
    if result.returncode != 0:
        raise RuntimeError(f"pip install {spec} failed: {result.stderr[-2000:]}")
    return bin_dir
