"""Install what you use: the wheel in a fresh venv with the `onnx` extra only, run from a folder outside the
repository (issue 25).

The venv sees nothing of this checkout (no PYTHONPATH, its own site-packages): the reference checkpoints,
the digits and the app templates come from the wheel's package data, ONNX converts and checks, and a
target whose extra is missing is one line naming it.
"""
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from wheels import REPO, build_wheel, clean_env, fresh_venv

# Package data the wheel must carry: every file of these folders of the source tree.
PACKAGE_DATA = ("mobilevit_deploy/checkpoints", "apps/templates")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def onnx_only(wheel, tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding the wheel with [onnx]."""
    return fresh_venv(tmp_path_factory.mktemp("venv") / "onnx-only", wheel, "onnx")


def _run(bin_dir: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "mvdeploy"), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(), timeout=600)


def test_the_wheel_holds_every_file_of_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in PACKAGE_DATA:
        files = [p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        assert files, folder
        assert not [f for f in files if f not in names], folder
    assert "mobilevit_deploy/checkpoints/digits.npz" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/"))]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for extra in ("onnx", "tflite", "onnx2tf", "coreml", "executorch", "ray", "hf", "all"):
        assert f"Provides-Extra: {extra}" in metadata, extra


def test_onnx_extra_converts_and_checks_outside_the_repository(onnx_only, tmp_path):
    where = subprocess.run([str(onnx_only / "python"), "-c", "import mobilevit_deploy; print(mobilevit_deploy.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=clean_env(), check=True)
    assert where.stdout.startswith(str(onnx_only.parent)), where.stdout      # the venv's copy, not the checkout's
    result = _run(onnx_only, "convert", "mobilevit_xxs", "--target", "onnx", "--image-size", "64",
                  "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    made = tmp_path / "out" / "mobilevit_xxs-fp32.onnx"
    assert made.is_file() and "reference:mobilevit_xxs_digits" in result.stdout, result.stdout   # package data
    checked = _run(onnx_only, "check", made, "--model", "mobilevit_xxs", cwd=tmp_path)
    assert checked.returncode == 0 and "pass" in checked.stdout, checked.stdout + checked.stderr
    samples = json.loads((tmp_path / "out" / "mobilevit_xxs-fp32.onnx.parity.json").read_text())["samples"]
    assert "digits test split" in json.dumps(samples), samples                    # the digits from the wheel


def test_a_target_without_its_extra_is_one_line_naming_it(onnx_only, tmp_path):
    result = _run(onnx_only, "convert", "mobilevit_xxs", "--target", "tflite", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert 'tflite needs: pip install "mvdeploy[tflite]"' in lines[0] and "not installed" in lines[0], lines
    assert not (tmp_path / "mvdeploy-out").exists()
    ray = _run(onnx_only, "report", "mobilevit_xxs", "--targets", "onnx", "--workers", "2", "--out", "r", cwd=tmp_path)
    assert ray.returncode == 1 and ray.stderr.count("\n") == 1, ray.stderr
    assert 'Ray needs: pip install "mvdeploy[ray]" (ray is not installed)' in ray.stderr and not (tmp_path / "r").exists()
    doctor = _run(onnx_only, "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    rows = {line.split("│")[1].strip(): line for line in doctor.stdout.splitlines() if line.count("│") > 4}
    assert "ready" in rows["onnx"] and "missing" in rows["tflite"] and "missing" in rows["coreml"], doctor.stdout
    assert 'coreml: coreml needs: pip install "mvdeploy[coreml]"' in doctor.stdout
    version = _run(onnx_only, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("mvdeploy 0.1.0 (torch 2.13.0"), version.stdout
