"""What each extra costs: the wheel installed into a fresh venv per extra, one after the other.

For each: the venv's site-packages on disk, that beyond the core's (the wheel with no extra), the number of
distributions pip installed, and the install time (pip's own byte-compilation off, as `make install` does;
wheels from pip's cache and the machine's package index, so the time is unpacking, not downloading). The onnx2tf extra also gets
`pip install --no-deps onnx2tf==1.29.24`, the step its pins make necessary.

Usage: python benchmarks/install_sizes.py [--extras ,onnx,tflite,coreml,executorch,ray,hf,onnx2tf,all]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from wheels import build_wheel, clean_env, fresh_venv  # noqa: E402

from mobilevit_deploy.extras import ONNX2TF_PIN  # noqa: E402

EXTRAS = ("", "onnx", "tflite", "coreml", "executorch", "ray", "hf", "onnx2tf", "all")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def installed_count(report: Path) -> int:
    """How many distributions pip's installation report says it installed."""
    return len(json.loads(report.read_text())["install"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default=",".join(EXTRAS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel = build_wheel(tmp / "wheel")
        rows = []
        for extra in args.extras.split(","):
            venv = tmp / f"venv-{extra or 'core'}"
            start = time.perf_counter()
            bin_dir = fresh_venv(venv, wheel, extra, report=tmp / f"{extra or 'core'}.json")
            if extra in ("onnx2tf", "all"):
                subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile", "--no-deps",
                                ONNX2TF_PIN], check=True, capture_output=True, env=clean_env())
            seconds = time.perf_counter() - start
            (site,) = venv.glob("lib/python*/site-packages")
            rows.append((extra or "(core)", installed_count(tmp / f"{extra or 'core'}.json"), folder_bytes(site), seconds))
            print(f"{rows[-1][0]}: {rows[-1][2] / 1e6:.0f} MB on disk, {seconds:.0f} s", flush=True)
            subprocess.run(["rm", "-rf", str(venv)], check=True)
    core_disk = rows[0][2]
    print("\n| extra | distributions | installed | beyond the core | install time |")
    print("|---|---|---|---|---|")
    for extra, count, disk, seconds in rows:
        beyond = "" if extra == "(core)" else f"+{(disk - core_disk) / 1e6:,.0f} MB"
        print(f"| {extra} | {count} | {disk / 1e6:,.0f} MB | {beyond} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
