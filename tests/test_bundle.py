"""App bundles: what they hold, that verify passes on fresh ones, and that every kind of tampering fails."""
import json
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from apps.bundle import build_bundle, write_zip
from apps.verify import verify
from mobilevit_deploy.targets import get_target
from mobilevit_deploy import pipeline

LABELS = [f"class {i}" for i in range(10)]


def _build(platform, out, name="mobilevit_xxs", runtime=None, weights="random", artifact_path=None):
    prepared = pipeline.prepare_model(name, weights=weights, num_classes=10, image_size=64)
    golden = pipeline.parity_inputs(prepared, synthetic=3, real=0)
    return build_bundle(prepared, platform, out, golden, [None] * 3, LABELS, runtime=runtime,
                        artifact_path=artifact_path)


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
def android_executorch(tmp_path_factory, model_file):
    """The ExecuTorch variant bundles the matrix's .pte (the reference weights), checked again by the bundle:
    an ExecuTorch conversion of its own would take a minute, and `android` and `ios` cover a bundle's own."""
    from mobilevit_deploy.spec import Precision

    if get_target("executorch").unavailable_reason():
        pytest.skip(get_target("executorch").unavailable_reason())
    made = model_file("mobilevit_xxs", "executorch", Precision.fp32)
    return _build("android", tmp_path_factory.mktemp("android-et"), runtime="executorch", weights=None,
                  artifact_path=made.path)


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
    assert len(manifest["golden"]["cases"]) == 4 and manifest["parity"]["passed"] is True   # 3 + the golden photo
    assert manifest["golden"]["cases"][-1]["resized_from"] == [112, 83]
    assert manifest["preprocessing"]["crop"] == 64 and manifest["output"]["shape"][-1] == 10
    sources = [p for p in (bundle.folder / "app").rglob("*") if p.is_file()]
    assert sources and not any("{{" in p.read_text() for p in sources)
    app_text = "\n".join(p.read_text() for p in sources)
    assert manifest["input"]["name"] in app_text and manifest["output"]["name"] in app_text
    for result in (verify(bundle.folder), verify(bundle.zip_path)):
        assert result.passed, result.failures
        assert any("golden cases on" in c and "a photo resized as bundle.json declares" in c for c in result.verified)


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


def test_a_golden_photo_whose_stored_tensor_is_not_the_declared_preprocessing_fails(android, tmp_path):
    """The negative control of verify's golden photo: its stored input tensor moved by 0.1 (checksums made
    again, so only the preprocessing check can see it) fails, naming the file."""
    from apps.manifest import checksums

    root = _copy(android, tmp_path)
    manifest = json.loads((root / "bundle.json").read_text())
    case = manifest["golden"]["cases"][-1]
    stored = np.fromfile(root / case["input"], dtype="<f4")
    (stored + np.float32(0.1)).astype("<f4").tofile(root / case["input"])
    manifest["files"] = checksums(root)
    (root / "bundle.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    failures = verify(root).failures
    assert any(f.startswith(f"golden/{Path(case['image']).name}: the declared preprocessing gives another tensor")
               for f in failures), failures


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


# --- the Android apps' own preprocessing, compiled and run (issue 20) -----------------------------------------

KOTLINC = Path(sys.prefix) / "kotlin" / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc"
CORE = "app/app/src/main/java/dev/mvdeploy/demo"
# Photos the test makes (no data files): sizes and aspect ratios a user's camera roll has, and two JPEGs.
PHOTOS = {"portrait-480x640.png": (480, 640), "landscape-800x600.png": (800, 600), "small-40x30.png": (40, 30),
          "large-3000x2000.png": (3000, 2000), "crop-64x64.png": (64, 64), "square-333x333.jpg": (333, 333),
          "panorama-1600x400.jpg": (1600, 400)}
# The negative controls: the core with one usual mistake written into it (the text it replaces must exist).
MISTAKES = {
    "bgr": ("(16 - 8 * c)", "(8 * c)"),                                                # channels reversed
    "bilinear": ("KERNEL_SUPPORT = 2.0", "KERNEL_SUPPORT = 1.0"),                      # the old bilinear resize
}


def _photo(width: int, height: int, seed: int) -> "Image.Image":
    """A smooth scene with edges and texture (gradients, rings, disks, sensor noise), like a photo to a resize."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    r = 0.5 + 0.5 * np.sin(2 * np.pi * (3 * x + 2 * y + seed / 7))
    g = y * 0.8 + 0.1 * np.sin(40 * np.hypot(x - 0.5, y - 0.3))
    b = 0.5 + 0.5 * np.cos(2 * np.pi * 6 * x * y)
    image = np.stack([r, g, b], -1)
    for cx, cy, radius, color in zip(rng.random(4), rng.random(4), 0.05 + 0.2 * rng.random(4), rng.random((4, 3))):
        image[np.hypot(x - cx, y - cy * height / max(width, height)) < radius] = color
    image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
    return Image.fromarray((image * 255).round().astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, (name, (width, height)) in enumerate(PHOTOS.items()):
        _photo(width, height, i).save(folder / name, quality=90)
    return folder


@pytest.fixture(scope="module")
def kotlin_cores(android, android_executorch, tmp_path_factory):
    """Every Android bundle variant's Preprocessing.kt and BundleSpec.kt (and the android one with each of
    MISTAKES) with the JVM driver, compiled in one kotlinc run: {name: (bundle, package)}."""
    import subprocess
    import time

    if not KOTLINC.exists():
        pytest.skip(f"kotlinc is not installed at {KOTLINC} (make install brings it)")
    work = tmp_path_factory.mktemp("kotlin")
    driver = (Path(__file__).parent / "kotlin" / "PreprocessDriver.kt").read_text()
    variants = {"android": (android, {}), "android_executorch": (android_executorch, {})}
    variants.update({mistake: (android, {old: new}) for mistake, (old, new) in MISTAKES.items()})
    cores = {}
    for name, (bundle, edits) in variants.items():
        package = f"check.{name}"
        for source in ("Preprocessing.kt", "Scores.kt", "BundleSpec.kt"):
            text = (bundle.folder / CORE / source).read_text()
            for old, new in edits.items() if source == "Preprocessing.kt" else ():
                assert old in text, f"the mistake {name} no longer applies to Preprocessing.kt"
                text = text.replace(old, new)
            assert "import android." not in text, f"{source} must stay pure Kotlin"
            (work / name).mkdir(exist_ok=True)
            (work / name / source).write_text(text.replace("package dev.mvdeploy.demo", f"package {package}"))
        (work / name / "PreprocessDriver.kt").write_text(driver.replace("package dev.mvdeploy.demo", f"package {package}"))
        cores[name] = (bundle, package)
    start = time.perf_counter()
    done = subprocess.run([str(KOTLINC), *sorted(str(p) for p in work.glob("*/*.kt")), "-include-runtime", "-nowarn",
                           "-d", str(work / "cores.jar")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    print(f"kotlinc: {len(cores)} cores compiled in {time.perf_counter() - start:.1f} s")
    return work / "cores.jar", cores


def _kotlin_inputs(jar: Path, package: str, photos: Path, out: Path) -> dict:
    import subprocess

    out.mkdir()
    files = sorted(photos.iterdir())
    done = subprocess.run(["java", "-cp", str(jar), f"{package}.PreprocessDriverKt", str(out), *map(str, files)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {f.name: np.fromfile(out / f"{f.name}.f32", dtype="<f4") for f in files}


def _python_inputs(bundle, photos: Path) -> tuple[dict, "Preprocess", bool]:
    """mvdeploy's own tensors for the photos ([3, crop, crop]), with the bundle's preprocessing."""
    from PIL import Image

    from mobilevit_deploy.data import preprocess_image
    from mobilevit_deploy.spec import Preprocess

    manifest = json.loads((bundle.folder / "bundle.json").read_text())
    pre = Preprocess.from_dict(manifest["preprocessing"])
    with_pil = {f.name: preprocess_image(Image.open(f), pre).numpy() for f in sorted(photos.iterdir())}
    return with_pil, pre, manifest["input"]["layout"] == "nhwc"


def _pixel_differences(kotlin: dict, python: dict, pre, nhwc: bool) -> dict:
    """Per photo: max |kotlin - python| in 8-bit pixel units (before mean/std)."""
    std = np.asarray(pre.std, np.float32).reshape(3, 1, 1)
    out = {}
    for name, expected in python.items():
        got = kotlin[name].reshape((pre.crop, pre.crop, 3) if nhwc else (3, pre.crop, pre.crop))
        got = got.transpose(2, 0, 1) if nhwc else got
        out[name] = float(np.abs((got - expected) * std).max() * 255)
    return out


@pytest.mark.parametrize("variant", ["android", "android_executorch"])
def test_the_android_core_computes_the_tensors_parity_checked(variant, kotlin_cores, photos, tmp_path):
    """The bundle's own Preprocessing.kt, compiled and run on the JVM, gives mvdeploy's tensors for photos of
    every shape (bicubic with antialiasing, as declared in bundle.json) and so the same logits."""
    from mobilevit_deploy.parity import compare
    from mobilevit_deploy.targets import load_artifact

    jar, cores = kotlin_cores
    bundle, package = cores[variant]
    python, pre, nhwc = _python_inputs(bundle, photos)
    differences = _pixel_differences(_kotlin_inputs(jar, package, photos, tmp_path / "out"), python, pre, nhwc)
    print(f"{variant}: max pixel difference per photo {differences}")
    assert max(differences.values()) <= 1.0, differences     # the bound: one 8-bit step
    assert max(d for n, d in differences.items() if n.endswith(".png")) == 0.0, differences   # reached: bit-exact
    # (JPEG too here: libjpeg-turbo and javax.imageio decoded these two files alike)
    manifest = json.loads((bundle.folder / "bundle.json").read_text())
    assert manifest["preprocessing"]["resampling"]["name"] == "pillow-bicubic"
    target, artifact = load_artifact(bundle.folder / manifest["model"]["file"])
    kotlin = _kotlin_inputs(jar, package, photos, tmp_path / "again")
    images = np.stack([(kotlin[n].reshape(pre.crop, pre.crop, 3).transpose(2, 0, 1) if nhwc else
                        kotlin[n].reshape(3, pre.crop, pre.crop)) for n in sorted(python)])
    with target.runner(artifact) as runner:
        metrics = compare(runner.infer(np.stack([python[n] for n in sorted(python)])), runner.infer(images))
    assert metrics.top1_agreement == 1.0 and metrics.max_rel < 0.05, metrics


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_core_with_a_usual_mistake_is_caught(mistake, kotlin_cores, photos, tmp_path):
    """The negative controls: channels in BGR order, or the old bilinear resize against the bicubic declared."""
    jar, cores = kotlin_cores
    bundle, package = cores[mistake]
    python, pre, nhwc = _python_inputs(bundle, photos)
    differences = _pixel_differences(_kotlin_inputs(jar, package, photos, tmp_path / "out"), python, pre, nhwc)
    resized = {n: d for n, d in differences.items() if not n.startswith("crop-")}   # an unresized photo: no resize
    assert min(resized.values()) > 1.0, differences


@pytest.mark.parametrize("sign,passes", [(1.0, True), (-1.0, False)], ids=["same-logits", "negated-logits"])
def test_the_android_self_test_core_writes_what_verify_reads(sign, passes, kotlin_cores, tmp_path):
    """Scores.kt on the JVM: each golden case held to bundle.json's tolerance (negated logits fail every
    case), and its device_outputs.json text read by `verify --device-outputs` with the same verdict."""
    import subprocess

    from apps.diagnose import read_device_outputs

    jar, cores = kotlin_cores
    bundle, package = cores["android"]
    done = subprocess.run(["java", "-cp", str(jar), f"{package}.PreprocessDriverKt", "--self-test", str(bundle.folder),
                           str(sign)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    verdicts = [line.split()[2] for line in done.stdout.splitlines() if line.startswith("case ")]
    assert verdicts == (["ok"] * 4 if passes else ["FAIL"] * 4), done.stdout
    device = tmp_path / "device_outputs.json"
    device.write_text(done.stdout[done.stdout.index("{"):])
    assert verify(bundle.folder, read_device_outputs(device)).passed is passes


def test_the_swift_core_is_the_kotlin_core_step_for_step():
    """Swift cannot be compiled here: the iOS Preprocessing.swift is held to the Kotlin core (which is
    compiled and run above) by its constants, its steps in order and the expressions that decide numbers."""
    import re

    from apps.bundle import TEMPLATES

    kotlin = (TEMPLATES / "android" / CORE.removeprefix("app/") / "Preprocessing.kt").read_text()
    swift = (TEMPLATES / "ios" / "MVDeployDemo" / "Kit" / "Preprocessing.swift").read_text()
    constants = {"PRECISION_BITS": "precisionBits", "KERNEL_A": "kernelA", "KERNEL_SUPPORT": "kernelSupport"}
    for k, s in constants.items():
        kv = re.search(rf"const val {k} = ([-\d.]+)", kotlin).group(1)
        sv = re.search(rf"static let {s} = ([-\d.]+)", swift).group(1)
        assert float(kv) == float(sv), (k, kv, sv)
    steps_kotlin = re.findall(r"fun (\w+)\(", kotlin)
    steps_swift = re.findall(r"func (\w+)\(", swift)
    assert [s for s in steps_kotlin if s != "normalize"] == steps_swift, (steps_kotlin, steps_swift)  # Core ML normalizes
    same = [("Math.rint(width * scale)", "(Double(width) * scale).rounded(.toNearestOrEven)"),
            ("(w - BundleSpec.CROP) / 2", "(w - BundleSpec.crop) / 2"),
            ("maxOf(scale, 1.0)", "max(scale, 1.0)"),
            ("(center - support + 0.5).toInt()", "Int(center - support + 0.5)"),
            ("(i + 0.5) * scale", "(Double(i) + 0.5) * scale"),
            ("/ filterScale", "/ filterScale"),
            ("1L shl (PRECISION_BITS - 1)", "1 << (precisionBits - 1)"),
            ("(sum shr PRECISION_BITS).toInt().coerceIn(0, 255)", "min(max(sum >> precisionBits, 0), 255)"),
            ("if (outWidth != width)", "if outWidth != width"), ("if (outHeight != height)", "if outHeight != height")]
    for k, s in same:
        assert k in kotlin and s in swift, (k, s)
    runner = (TEMPLATES / "ios" / "MVDeployDemo" / "Kit" / "ModelRunner.swift").read_text()
    assert "Preprocessing.toInput" in runner and "import Vision" not in runner and "imageCropAndScaleOption" not in runner
