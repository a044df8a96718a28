"""App bundles: what they hold, that verify passes on fresh ones, and that every kind of tampering fails."""
import json
import shutil
import stat
import zipfile

import numpy as np
import pytest

from apps.bundle import build_bundle, write_zip
from apps.verify import verify
from mobilevit_deploy.targets import get_target
from mobilevit_deploy import pipeline

LABELS = [f"class {i}" for i in range(10)]


def _build(platform, out, name="mobilevit_xxs", runtime=None):
    prepared = pipeline.prepare_model(name, weights="random", num_classes=10, image_size=64)
    golden = pipeline.parity_inputs(prepared, synthetic=3)
    return build_bundle(prepared, platform, out, golden, [None] * 3, LABELS, runtime=runtime)


@pytest.fixture(scope="module")
def android(tmp_path_factory):
    if get_target("tflite").unavailable_reason():
        pytest.skip(get_target("tflite").unavailable_reason())
    return _build("android", tmp_path_factory.mktemp("android"))


@pytest.fixture(scope="module")
def ios(tmp_path_factory):
    if get_target("coreml").unavailable_reason():
        pytest.skip(get_target("coreml").unavailable_reason())
    return _build("ios", tmp_path_factory.mktemp("ios"))


@pytest.fixture(scope="module")
def android_executorch(tmp_path_factory):
    if get_target("executorch").unavailable_reason():
        pytest.skip(get_target("executorch").unavailable_reason())
    return _build("android", tmp_path_factory.mktemp("android-et"), runtime="executorch")


def _copy(bundle, tmp_path):
    dest = tmp_path / bundle.folder.name
    shutil.copytree(bundle.folder, dest)
    return dest


@pytest.mark.parametrize("platform", ["android", "ios", "android_executorch"])
def test_fresh_bundle_verifies_and_holds_everything(platform, request):
    bundle = request.getfixturevalue(platform)
    manifest = json.loads((bundle.folder / "bundle.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["platform"] == platform.split("_")[0]
    assert (bundle.folder / manifest["model"]["file"]).exists()
    assert (bundle.folder / "labels.txt").read_text().splitlines() == LABELS
    assert len(manifest["golden"]["cases"]) == 3 and manifest["parity"]["passed"] is True
    assert manifest["preprocessing"]["crop"] == 64 and manifest["output"]["shape"][-1] == 10
    sources = [p for p in (bundle.folder / "app").rglob("*") if p.is_file()]
    assert sources and not any("{{" in p.read_text() for p in sources)
    app_text = "\n".join(p.read_text() for p in sources)
    assert manifest["input"]["name"] in app_text and manifest["output"]["name"] in app_text
    for result in (verify(bundle.folder), verify(bundle.zip_path)):
        assert result.passed, result.failures
        assert any("golden" in c for c in result.verified)


def test_verify_runs_the_golden_self_test_on_arm64_too(android):
    """`mvdeploy verify --arch arm64`: the same golden cases on ai-edge-litert's ARM64 build (emulated); an
    iOS bundle's Core ML file is refused by name (it runs only on Apple hardware)."""
    from mobilevit_deploy.emulation import EmulatorMissingError, arm_cpus, find_emulator
    try:
        find_emulator()
    except EmulatorMissingError as e:
        pytest.skip(str(e))
    result = verify(android.folder, arm_cpus=arm_cpus("arm64", "cortex-a53"))
    assert result.passed, result.failures
    arm = [line for line in result.verified if "golden cases on" in line and "aarch64 build" in line]
    assert arm and "emulated cortex-a53" in arm[0] and len(result.verified) == 4, result.verified


@pytest.mark.parametrize("platform", ["android", "ios"])
def test_zip_is_byte_identical_for_the_same_inputs(platform, request, tmp_path):
    first = request.getfixturevalue(platform)
    second = _build(platform, tmp_path)
    assert first.zip_path.read_bytes() == second.zip_path.read_bytes()


def test_tampered_model_byte_fails(android, tmp_path):
    root = _copy(android, tmp_path)
    model = root / json.loads((root / "bundle.json").read_text())["model"]["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = verify(root)
    assert not result.passed and any("checksum mismatch: model/" in f for f in result.failures)


def test_tampered_manifest_fails(android, tmp_path):
    root = _copy(android, tmp_path)
    manifest = json.loads((root / "bundle.json").read_text())
    del manifest["input"]["layout"]
    manifest["preprocessing"]["crop"] = "64"
    (root / "bundle.json").write_text(json.dumps(manifest))
    failures = verify(root).failures
    assert "bundle.json: missing field 'input.layout'" in failures
    assert "bundle.json: field 'preprocessing.crop' should be int, is str" in failures
    (root / "bundle.json").write_text("{not json")
    assert any("not valid JSON" in f for f in verify(root).failures)


def test_missing_file_fails(android, tmp_path):
    root = _copy(android, tmp_path)
    (root / "labels.txt").unlink()
    assert "missing file labels.txt" in verify(root).failures


def test_wrong_golden_output_fails(android, tmp_path):
    """The checksum is recomputed, so only the golden re-run can catch the wrong expectation."""
    from apps.manifest import sha256
    root = _copy(android, tmp_path)
    manifest = json.loads((root / "bundle.json").read_text())
    path = root / manifest["golden"]["cases"][1]["expected"]
    expected = np.fromfile(path, dtype="<f4")
    expected[::-1].tofile(path)
    manifest["files"][manifest["golden"]["cases"][1]["expected"]] = sha256(path)
    (root / "bundle.json").write_text(json.dumps(manifest))
    failures = verify(root).failures
    assert len(failures) == 1 and failures[0].startswith("golden case 001: max_rel")


def test_zip_with_parent_path_fails_without_extracting(android, tmp_path):
    evil = tmp_path / "evil.zip"
    shutil.copy(android.zip_path, evil)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("../outside.txt", "x")
    failures = verify(evil).failures
    assert failures == ["zip entry '../outside.txt' climbs out of the bundle ('..')"]
    assert not (tmp_path.parent / "outside.txt").exists()


def test_zip_with_symlink_or_absolute_path_fails(android, tmp_path):
    evil = tmp_path / "evil.zip"
    shutil.copy(android.zip_path, evil)
    with zipfile.ZipFile(evil, "a") as zf:
        link = zipfile.ZipInfo("mobilevit_xxs-android/labels-link.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("/abs.txt", "x")
    failures = verify(evil).failures
    assert "zip entry 'mobilevit_xxs-android/labels-link.txt' is a symbolic link" in failures
    assert "zip entry '/abs.txt' has an absolute path" in failures


def test_extra_unlisted_file_fails(android, tmp_path):
    root = _copy(android, tmp_path)
    (root / "golden" / "extra.bin").write_bytes(b"0")
    assert "file not listed in bundle.json: golden/extra.bin" in verify(root).failures


def test_write_zip_is_sorted_with_fixed_dates(tmp_path):
    folder = tmp_path / "b"
    (folder / "z").mkdir(parents=True)
    (folder / "z" / "a.txt").write_text("1")
    (folder / "b.txt").write_text("2")
    write_zip(folder, tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert zf.namelist() == ["b/b.txt", "b/z/a.txt"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


# Which runtime the Android app is written for: the LiteRT interpreter or ExecuTorch's Module API, each
# with its own build dependency and the model file kept uncompressed in the APK.
ANDROID_RUNTIMES = {
    "android": ("tflite", "mobilevit_xxs-android", "org.tensorflow.lite.Interpreter",
                "com.google.ai.edge.litert:litert", '"tflite"'),
    "android_executorch": ("executorch", "mobilevit_xxs-android-executorch", "org.pytorch.executorch.Module",
                           "org.pytorch:executorch-android", '"pte"'),
}


@pytest.mark.parametrize("fixture", sorted(ANDROID_RUNTIMES))
def test_android_app_is_written_for_the_bundled_runtime(fixture, request):
    bundle = request.getfixturevalue(fixture)
    runtime, folder, api, dependency, suffix = ANDROID_RUNTIMES[fixture]
    manifest = json.loads((bundle.folder / "bundle.json").read_text())
    assert (manifest["runtime"], manifest["model"]["target"], bundle.folder.name) == (runtime, runtime, folder)
    assert manifest["model"]["file"].endswith(suffix.strip('"'))
    engine = (bundle.folder / "app/app/src/main/java/dev/mvdeploy/demo/Engine.kt").read_text()
    gradle = (bundle.folder / "app/app/build.gradle.kts").read_text()
    assert f"import {api}" in engine and dependency in gradle and f"noCompress += {suffix}" in gradle
    others = [v for k, v in ANDROID_RUNTIMES.items() if k != fixture]
    assert not any(o[2] in engine or o[3] in gradle for o in others)
    if runtime == "executorch":                  # the .pte takes float NCHW at every precision
        assert manifest["input"]["layout"] == "nchw" and manifest["input"]["dtype"] == "float32"


def test_unknown_runtime_is_one_line(tmp_path, cli):
    result = cli("bundle", "--platform", "android", "--runtime", "coreml", "--out", tmp_path / "b", timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown runtime for android 'coreml'" in lines[0] and "executorch" in lines[0]
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
