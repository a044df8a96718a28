"""Hostile and careless input, as a new user would try it, through the real CLI.

Every case asserts: the exit code, exactly one line on stderr (no traceback, no library chatter),
nothing new in --out after a failure, a good file already there left intact, and nothing left in
the temporary folder. Grouped by the classes of the hardening issue.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli
from mobilevit_deploy.models import create_model

SIZE = 64


def _one_line(result, code, *needles):
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def onnx10(tmp_path_factory):
    """A good 10-class ONNX file (the digits checkpoint), made once."""
    out = tmp_path_factory.mktemp("onnx10")
    tmpdir = tmp_path_factory.mktemp("tmp")
    result = run_cli("convert", "--target", "onnx", "--out", out, tmpdir=tmpdir)
    assert result.returncode == 0, result.stderr
    return out / "mobilevit_xxs-fp32.onnx"


# -- tracebacks and silent acceptance: every bad value is refused before any work ------------------

BAD_VALUES = {
    "num-classes-negative": (("convert", "--target", "onnx", "--weights", "random", "--num-classes", "-1"), "--num-classes"),
    "num-classes-zero": (("convert", "--target", "onnx", "--weights", "random", "--num-classes", "0"), "--num-classes"),
    "image-size-huge": (("convert", "--target", "onnx", "--weights", "random", "--image-size", "100000"), "larger than"),
    "image-size-zero": (("convert", "--target", "onnx", "--image-size", "0"), "at least 64; got 0"),
    "calib-samples-negative": (("convert", "--target", "tflite", "--precision", "int8", "--calib-data", "synthetic",
                                "--calib-samples", "-3"), "--calib-samples must be at least 1"),
    "calib-samples-zero-folder": (("convert", "--target", "tflite", "--precision", "int8", "--calib-data", ".",
                                   "--calib-samples", "0"), "--calib-samples must be at least 1"),
    "precision-empty": (("convert", "--target", "onnx", "--precision", ","), "no precision given"),
    "foreign-option": (("convert", "--target", "tflite", "--ios", "16"), "target tflite has no option 'ios'"),
    "report-eval-limit-zero": (("report", "--eval-limit", "0"), "--eval-limit must be at least 1"),
    "report-eval-limit-negative": (("report", "--eval-limit", "-1"), "--eval-limit must be at least 1"),
    "report-repeats-zero": (("report", "--repeats", "0"), "--repeats must be at least 1"),
    "report-fallbacks-negative": (("report", "--fallbacks", "-1"), "--fallbacks must be at least 0"),
    "report-nothing-to-do": (("report", "--targets", "onnx", "--precisions", "int8"), "nothing to report"),
    "bundle-golden-zero": (("bundle", "--golden", "0"), "--golden must be at least 1"),
    "bundle-golden-negative": (("bundle", "--golden", "-1"), "--golden must be at least 1"),
    "coreml-ios-15": (("convert", "--target", "coreml", "--ios", "15"), "--ios 15 is not supported"),
    "coreml-int4-ios17": (("convert", "--target", "coreml", "--precision", "int4"), "needs --ios 18"),
    "coreml-nhwc": (("convert", "--target", "coreml", "--layout", "nhwc"), "only the nchw layout"),
}


@pytest.mark.parametrize("args,needle", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_one_line_before_any_work(run, tmp_path, args, needle):
    out = tmp_path / "out"
    result = run(*args, "--out", out, cwd=tmp_path)
    _one_line(result, 1, needle)
    assert not out.exists()


def test_overlapping_evaluation_and_calibration_images_are_one_line_before_any_work(run, tmp_path):
    """The same folder (or a part of it) for --eval-data and --calib-data: the overlap is named, with how
    many images, before a model is built or a file written."""
    from PIL import Image

    photos = tmp_path / "photos"
    for label in ("a", "b"):
        (photos / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (40 * i, 80, 120)).save(photos / label / f"{i}.png")
    out = tmp_path / "out"
    common = ("report", "mobilevit_xxs", "--targets", "tflite", "--precisions", "int8", "--eval-data", photos)
    same = run(*common, "--calib-data", photos, "--out", out)
    _one_line(same, 1, "the evaluation and calibration sets overlap: 6 of the 6 images", "must be disjoint")
    part = run(*common, "--calib-data", photos / "b", "--out", out)
    _one_line(part, 1, "overlap: 3 of the 3 images in --calib-data")
    assert not out.exists()


def test_a_usage_error_keeps_clicks_exit_2(run):
    result = run("convert", "--image-size", "abc")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["convert", "bundle", "report"])
def test_out_that_is_a_file_is_refused_and_kept(run, tmp_path, command):
    existing = tmp_path / "results"
    existing.write_text("mine\n")
    _one_line(run(command, "--out", existing), 1, "is a file, not a folder")
    assert existing.read_text() == "mine\n"


@pytest.mark.parametrize("out", ["/proc/mvdeploy-out", "/dev/null/out"])
def test_out_that_cannot_exist_is_one_line(run, out):
    _one_line(run("convert", "--target", "onnx", "--out", out), 1, "cannot create --out folder")


def test_read_only_out_is_one_line(run, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the check cannot be shown as root")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    _one_line(run("convert", "--target", "onnx", "--out", folder / "x"), 1, "not writable")


def test_labels_that_are_binary_are_one_line(run, tmp_path):
    labels = tmp_path / "labels.bin"
    labels.write_bytes(bytes(range(256)) * 4)
    _one_line(run("convert", "--target", "coreml", "--labels", labels, "--out", tmp_path / "out"), 1,
              "labels file", "not")
    assert not (tmp_path / "out").exists()


def test_check_with_more_classes_than_the_file_is_one_line(run, onnx10):
    _one_line(run("check", onnx10, "--model", "mobilevit_xxs", "--weights", "random", "--num-classes", "1000"), 1,
              "has 10 outputs, the model 1000")


def test_random_bytes_mlpackage_is_one_line(run, tmp_path):
    package = tmp_path / "junk.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_bytes(os.urandom(512))
    result = run("check", package, "--model", "mobilevit_xxs")
    _one_line(result, 1)


def test_a_decompression_bomb_image_is_skipped_and_counted(tmp_path):
    from PIL import Image

    from mobilevit_deploy.data import load_folder
    from mobilevit_deploy.models import model_config

    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("1", (14000, 14000)).save(folder / "bomb.png")          # 196 M pixels, 25 MB of bits
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "fine.png")
    loaded = load_folder(folder, model_config("mobilevit_xxs").preprocess.with_size(SIZE))
    assert len(loaded.images) == 1 and loaded.skipped == 1


# -- a good file is never replaced by a worse one ----------------------------------------------------

def test_a_failing_conversion_never_replaces_a_good_file(run, tmp_path, onnx10):
    out = tmp_path / "out"
    out.mkdir()
    good = out / onnx10.name
    good.write_bytes(onnx10.read_bytes())
    (out / f"{good.name}.parity.json").write_text(Path(f"{onnx10}.parity.json").read_text())
    before = {p.name: _digest(p) for p in out.iterdir()}
    model = create_model("mobilevit_xxs", num_classes=10, image_size=SIZE)
    state = model.state_dict()
    state["head.fc.bias"] = torch.full_like(state["head.fc.bias"], float("nan"))   # NaN logits
    save_file(state, str(tmp_path / "nan.safetensors"))
    result = run("convert", "--target", "onnx", "--image-size", SIZE, "--weights", tmp_path / "nan.safetensors",
                 "--num-classes", "10", "--out", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert {p.name: _digest(p) for p in out.iterdir() if p.is_file()} == before          # the good pair intact
    failed = out / "failed"
    assert sorted(p.name for p in failed.iterdir()) == [good.name, f"{good.name}.parity.json"]
    assert json.loads((failed / f"{good.name}.parity.json").read_text())["passed"] is False
    assert "failed" in result.stderr


# -- verify: a bundle never points outside itself, and no zip is extracted unverified ------------------

def _zip(path: Path, entries: dict[str, bytes], **kw) -> Path:
    with zipfile.ZipFile(path, "w", **kw) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_bomb_is_refused_before_extraction(run, tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", {"b/zeros.bin": bytes(64 << 20)}, compression=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1 << 20
    result = run("verify", bomb)
    assert result.returncode == 1 and "zip bomb" in result.stderr and "Traceback" not in result.stderr


def test_zip_with_a_bad_crc_is_a_failure_line(run, tmp_path):
    path = _zip(tmp_path / "crc.zip", {"b/bundle.json": b"{}" * 100})
    data = bytearray(path.read_bytes())
    data[data.index(b"{}{}") + 10] ^= 0xFF                                  # corrupt the stored bytes
    path.write_bytes(bytes(data))
    result = run("verify", path)
    assert result.returncode == 1 and "cannot be extracted" in result.stderr and "Traceback" not in result.stderr


def test_encrypted_or_unknown_compression_entries_are_refused(tmp_path):
    from apps.verify import unsafe_zip_entries

    path = _zip(tmp_path / "odd.zip", {"b/a.txt": b"a", "b/c.txt": b"c"})
    with zipfile.ZipFile(path) as zf:
        zf.infolist()[0].flag_bits |= 0x1                 # as an encrypted entry declares itself
        zf.infolist()[1].compress_type = 99               # an AE-x / unknown method
        problems = unsafe_zip_entries(zf)
    assert any("encrypted" in p for p in problems) and any("compression method 99" in p for p in problems)


def test_zip_that_climbs_out_is_refused_before_extraction(run, tmp_path):
    path = _zip(tmp_path / "evil.zip", {"../evil.txt": b"x"})
    result = run("verify", path)
    assert result.returncode == 1 and "climbs out" in result.stderr
    assert not (tmp_path / "evil.txt").exists()


def test_manifest_paths_must_stay_inside_and_types_are_strict():
    from apps.manifest import schema_failures

    good = {"schema_version": 1, "platform": "android",
            "model": {"name": "m", "weights": "w", "file": "model/m.tflite", "target": "tflite", "precision": "fp32"},
            "input": {"name": "i", "shape": [1], "layout": "nhwc", "dtype": "float32"},
            "preprocessing": {"resize": 1, "crop": 1, "color_order": "RGB", "scale": 0.1, "mean": [], "std": []},
            "output": {"name": "o", "shape": [1], "dtype": "float32"}, "labels": "labels.txt", "files": {},
            "golden": {"cases": [], "tolerance": {}}, "parity": {"passed": True}, "tools": {}}
    assert schema_failures(good) == []
    outside = json.loads(json.dumps(good))
    outside["model"]["file"] = "/etc/passwd"
    assert any("absolute path" in f for f in schema_failures(outside))
    climbing = json.loads(json.dumps(good))
    climbing["labels"] = "../../labels.txt"
    assert any("outside the bundle" in f for f in schema_failures(climbing))
    boolean = json.loads(json.dumps(good))
    boolean["schema_version"] = True
    assert any("schema_version" in f for f in schema_failures(boolean))


# -- leftovers ----------------------------------------------------------------------------------------

def test_a_closed_stdout_ends_quietly(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(f"{sys.executable} -m mobilevit_deploy.cli models | head -c 1 >/dev/null",
                            shell=True, capture_output=True, text=True, env=env)
    assert result.stderr == ""


def test_a_folder_whose_name_is_not_utf8_can_be_checked(run, tmp_path, onnx10):
    folder = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9"))
    folder.mkdir()
    copy = folder / onnx10.name
    copy.write_bytes(onnx10.read_bytes())
    result = run("check", copy, "--model", "mobilevit_xxs")
    assert result.returncode == 0, result.stderr
    assert (folder / f"{onnx10.name}.parity.json").is_file()


def test_parity_runs_on_real_images_when_only_calibration_images_were_given(tmp_path):
    """A user's own weights with --calib-data photos/ and no --data: parity also sees real photos,
    never the ones calibration used."""
    import numpy as np
    from PIL import Image

    from mobilevit_deploy import pipeline
    from mobilevit_deploy.calibration import calibration_for

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    prepared = pipeline.prepare_model("mobilevit_xxs", weights="random", num_classes=10, image_size=SIZE)
    calibration = calibration_for(prepared, str(photos), samples=6)
    inputs = pipeline.parity_inputs(prepared, None, calibration=calibration)
    assert inputs.real == 4 and "disjoint from the calibration sample" in inputs.source
    everything = calibration_for(prepared, str(photos), samples=10)
    assert pipeline.parity_inputs(prepared, None, calibration=everything).real == 0      # nothing left over


# -- signals and concurrency ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_and_cleans_its_staging(tmp_path, sig, code):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen([sys.executable, "-m", "mobilevit_deploy.cli", "convert", "swin_micro", "--target", "onnx",
                             "--weights", "random", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob(".mvdeploy-tmp-*")) and proc.poll() is None:
        time.sleep(0.05)                                   # wait until the conversion is staging its file
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == [] if out.exists() else True
    assert list(tmpdir.iterdir()) == []


# Runs the real CLI, then lingers while Python shuts down: after the command is over and after Python
# stopped handling signals itself (an object of __main__ destroyed with the modules), where a Ctrl-C
# used to kill the process (exit status -2) instead of leaving the run's own status.
LINGER_AT_EXIT = """
import os, sys, time
class Linger:
    def __del__(self, write=os.write, sleep=time.sleep):
        write(2, b"shutting down\\n")
        sleep(3)
linger = Linger()
sys.argv = ["mvdeploy", *sys.argv[1:]]
from mobilevit_deploy.cli import main
main()
"""


def test_a_signal_after_the_command_is_over_leaves_its_status(tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", LINGER_AT_EXIT, "convert", "mobilevit_xxs", "--target", "onnx",
                             "--weights", "random", "--image-size", str(SIZE), "--out", str(out)],
                            env={**os.environ, "TMPDIR": str(tmpdir)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    while not seen or seen[-1] not in ("shutting down\n", ""):
        seen.append(proc.stderr.readline())                # the conversion, then Python's shutdown
    assert seen[-1] == "shutting down\n", "".join(seen)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen) + stderr     # the run had completed: its status stays
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["mobilevit_xxs-fp32.onnx", "mobilevit_xxs-fp32.onnx.parity.json"]
    assert list(tmpdir.iterdir()) == []


def test_a_staging_folder_of_a_killed_run_is_swept(tmp_path):
    from mobilevit_deploy.outputs import ensure_folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".mvdeploy-tmp-{dead.pid}-abc").mkdir()
    (tmp_path / f".mvdeploy-tmp-{os.getpid()}-live").mkdir()           # a run still going keeps its own
    ensure_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".mvdeploy-tmp-{os.getpid()}-live"]


def test_two_runs_into_one_out_never_mix(tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    runs = [subprocess.Popen([sys.executable, "-m", "mobilevit_deploy.cli", "convert", name, "--target", "onnx",
                              "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("mobilevit_xxs", "swin_micro")]
    for proc in runs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "mobilevit_xxs-fp32.onnx", "mobilevit_xxs-fp32.onnx.parity.json",
        "swin_micro-fp32.onnx", "swin_micro-fp32.onnx.parity.json"]
    for name in ("mobilevit_xxs", "swin_micro"):
        report = json.loads((out / f"{name}-fp32.onnx.parity.json").read_text())
        assert report["passed"] and name in report["reference"]


# -- what already held keeps holding -------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('MVDEPLOY_EVIL_MARKER', '/nonexistent/x')}",))


def test_a_malicious_pickle_never_runs(run, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MVDEPLOY_EVIL_MARKER", str(marker))
    torch.save({"w": _Evil()}, tmp_path / "evil.pt")
    result = run("convert", "--target", "onnx", "--weights", tmp_path / "evil.pt", "--out", tmp_path / "out")
    _one_line(result, 1, "cannot read weights")
    assert not marker.exists()
