"""Preprocessing diagnosis: an app's outputs made with each usual mistake are named as that mistake,
correct outputs pass, and a malformed device-outputs file is one error line.

One small bundle: swin_micro (ImageNet mean/std, so all five mistakes are meaningful), Android/TFLite
fp32, random weights, 64x64. "Device outputs" come from the bundle's own model on this host, fed the
golden images prepared with one mistake, as a phone would run them.
"""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from apps.bundle import build_bundle
from apps.diagnose import MISTAKES, DeviceOutputs, app_input, check_device_outputs, indistinct, read_device_outputs
from apps.manifest import checksums
from apps.verify import verify
from mobilevit_deploy import pipeline
from mobilevit_deploy.errors import BundleError
from mobilevit_deploy.models.mobilevit import MOBILEVIT_PREPROCESS
from mobilevit_deploy.spec import Layout, Preprocess
from mobilevit_deploy.targets import get_target


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if get_target("tflite").unavailable_reason():
        pytest.skip(get_target("tflite").unavailable_reason())
    prepared = pipeline.prepare_model("swin_micro", weights="random", num_classes=10, image_size=64)
    golden = pipeline.parity_inputs(prepared, synthetic=3)
    result = build_bundle(prepared, "android", tmp_path_factory.mktemp("diag"), golden, [None] * 3,
                          [f"class {i}" for i in range(10)])
    return result.folder


def _manifest(root):
    return json.loads((root / "bundle.json").read_text())


def _preprocess(manifest) -> Preprocess:
    return Preprocess.from_dict(manifest["preprocessing"])


def _host(root, feeds):
    target = get_target("tflite")
    with target.runner(target.load(root / _manifest(root)["model"]["file"])) as runner:
        return runner.infer(np.stack(feeds))


def _device(root, mistake=None) -> DeviceOutputs:
    """What an app making `mistake` (None: none) would report for the golden images."""
    manifest = _manifest(root)
    pre, layout = _preprocess(manifest), Layout(manifest["input"]["layout"])
    images = [c["image"] for c in manifest["golden"]["cases"]]
    pngs = [np.asarray(Image.open(root / i).convert("RGB")) for i in images]
    logits = _host(root, [app_input(p, pre, layout, mistake) for p in pngs])
    return DeviceOutputs("device.json", dict(zip(images, logits)))


def _write_json(path, device: DeviceOutputs):
    cases = [{"image": image, "logits": logits.tolist()} for image, logits in device.logits.items()]
    path.write_text(json.dumps({"device": "test", "cases": cases}))
    return path


@pytest.fixture(scope="module")
def photo_bundle(bundle, tmp_path_factory):
    """The bundle with golden images larger than the crop (non-square), input tensors and expected
    outputs remade from them: bundle.py writes crop-sized PNGs, where resize vs crop cannot differ."""
    root = tmp_path_factory.mktemp("photo") / bundle.name
    shutil.copytree(bundle, root)
    manifest = _manifest(root)
    pre = _preprocess(manifest)
    feeds = []
    for case in manifest["golden"]["cases"]:
        small = Image.open(root / case["image"]).convert("RGB")
        photo = small.resize((112, 80), Image.BICUBIC)                # a wide photo, shorter side 80 > 71
        photo.save(root / case["image"])
        x = app_input(np.asarray(photo), pre, Layout.nhwc)
        x.transpose(1, 2, 0).astype("<f4").tofile(root / case["input"])
        feeds.append(x)
    for case, y in zip(manifest["golden"]["cases"], _host(root, feeds)):
        y.astype("<f4").tofile(root / case["expected"])
    manifest["files"] = checksums(root)
    (root / "bundle.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert verify(root).passed
    return root


def test_correct_outputs_pass(bundle, photo_bundle):
    for root in (bundle, photo_bundle):
        result = verify(root, _device(root))
        assert result.passed, result.failures
        assert result.device.passed and not result.device.hypotheses        # nothing to diagnose
        assert sum(line.startswith("device golden/") for line in result.verified) == 4   # 3 + the golden photo


@pytest.mark.parametrize("mistake", ["bgr", "0-255", "no-mean-std", "layout"])
def test_each_mistake_is_named(bundle, mistake):
    result = verify(bundle, _device(bundle, mistake))
    assert not result.passed
    check = result.device
    assert check.diagnosis is not None and check.diagnosis.mistake == mistake, check.details()
    verdict = result.failures[-1]
    assert verdict.startswith(check.diagnosis.says + ": cosine 1.0000 with "), verdict
    assert "as specified" in verdict
    specified = next(h for h in check.hypotheses if h.mistake is None)
    assert not specified.matches and specified.cosine < check.diagnosis.cosine
    assert not check.indistinct                            # the golden photo tells resize mistakes apart too


def test_resize_instead_of_crop_is_named(photo_bundle):
    result = verify(photo_bundle, _device(photo_bundle, "resize"))
    assert not result.passed
    assert result.device.diagnosis.mistake == "resize", result.device.details()
    assert result.failures[-1].startswith("your app resizes the whole image to 64x64 instead of resizing the "
                                          "shorter side to 71 and center-cropping: cosine")
    assert not result.device.indistinct


@pytest.mark.parametrize("mistake", ["resize", "resampling"])
def test_resize_mistakes_are_named_through_the_golden_photo(bundle, mistake):
    """Every bundle's last golden case is a photo (not crop-sized): a whole-image resize, or a bilinear resize
    against the declared bicubic, is named from it."""
    assert _manifest(bundle)["golden"]["cases"][-1]["resized_from"] == [112, 83]
    result = verify(bundle, _device(bundle, mistake))
    assert not result.passed and result.device.diagnosis.mistake == mistake, result.device.details()
    assert result.failures[-1].startswith(MISTAKES[mistake].says.format(crop=64, resize=71, interpolation="bicubic"))


def test_verdicts_name_the_layouts_and_wrong_outputs_not_explained(bundle):
    check = check_device_outputs(bundle, _manifest(bundle), _device(bundle, "layout"))
    assert check.diagnosis.says == "your app hands the tensor in NCHW order to an NHWC input"
    device = _device(bundle)
    shuffled = DeviceOutputs("x", {k: v[::-1].copy() for k, v in device.logits.items()})   # no preprocessing does this
    check = check_device_outputs(bundle, _manifest(bundle), shuffled)
    assert check.diagnosis is None
    assert check.failures()[-1].startswith("no usual preprocessing mistake explains the device outputs")


def test_indistinct_mistakes_are_said():
    pre = MOBILEVIT_PREPROCESS.with_size(64)                   # mean 0, std 1
    assert "no mean/std" in indistinct("no-mean-std", pre, "tensor", [(64, 64)])
    assert "already 64x64" in indistinct("resize", pre, "tensor", [(64, 64)])
    assert "already 64x64" in indistinct("resampling", pre, "tensor", [(64, 64)])
    assert indistinct("resize", pre, "tensor", [(80, 112)]) is None
    assert indistinct("layout", pre, "image", [(64, 64)]).startswith("the model takes an image")
    assert indistinct("bgr", pre, "image", [(64, 64)]) is None


def test_app_input_by_hand():
    """A 2x2 image, crop 2, mean 0.5 / std 0.5: each mistake changes exactly its own step."""
    pre = Preprocess(2, 2, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20          # HWC, values 0..220
    pixels01 = image.transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(app_input(image, pre, Layout.nhwc), (pixels01 - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(app_input(image, pre, Layout.nhwc, "bgr"), (pixels01[::-1] - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(app_input(image, pre, Layout.nhwc, "0-255"), (pixels01 * 255 - 0.5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(app_input(image, pre, Layout.nhwc, "no-mean-std"), pixels01, rtol=1e-6)
    chw = (pixels01 - 0.5) / 0.5                                          # what the model should get
    got = app_input(image, pre, Layout.nhwc, "layout")                    # CHW bytes read as HWC
    np.testing.assert_allclose(got.transpose(1, 2, 0).reshape(-1), chw.reshape(-1), rtol=1e-6)
    got = app_input(image, pre, Layout.nchw, "layout")                    # HWC bytes read as CHW
    np.testing.assert_allclose(got.reshape(-1), chw.transpose(1, 2, 0).reshape(-1), rtol=1e-6)
    assert set(MISTAKES) == {"bgr", "0-255", "no-mean-std", "layout", "resize", "resampling"}


@pytest.mark.parametrize("text, problem", [
    ("{not json", "is not valid JSON"),
    ('{"outputs": []}', 'expected {"cases"'),
    ('{"cases": [{"image": "golden/000.png", "logits": ["a"]}]}', 'has no "logits" list of numbers'),
    ('{"cases": [{"logits": [1.0]}]}', 'has no "image" path'),
])
def test_malformed_device_outputs_are_one_error(tmp_path, text, problem):
    path = tmp_path / "device.json"
    path.write_text(text)
    with pytest.raises(BundleError, match=problem.replace("[", r"\[").replace("{", r"\{")):
        read_device_outputs(path)


def test_device_outputs_that_do_not_fit_the_bundle_fail(bundle):
    manifest, logits = _manifest(bundle), dict(_device(bundle).logits)
    with pytest.raises(BundleError, match="golden/000.png has 9 logits, the model gives 10"):
        check_device_outputs(bundle, manifest, DeviceOutputs("d.json", {**logits, "golden/000.png": np.zeros(9)}))
    with pytest.raises(BundleError, match="golden/009.png is not a golden image of this bundle"):
        check_device_outputs(bundle, manifest, DeviceOutputs("d.json", {**logits, "golden/009.png": np.zeros(10)}))
    del logits["golden/000.png"]
    check = check_device_outputs(bundle, manifest, DeviceOutputs("d.json", logits))
    assert check.failures() == ["device outputs have no logits for golden/000.png"] and not check.hypotheses
    result = verify(bundle, DeviceOutputs("d.json", {**logits, "golden/000.png": np.zeros(9, np.float32)}))
    assert result.failures == ["device outputs d.json: golden/000.png has 9 logits, the model gives 10"]


def test_cli(bundle, tmp_path, cli):
    bad = tmp_path / "bad.json"
    bad.write_text('{"cases": 3}')
    proc = cli("verify", bundle, "--device-outputs", bad)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f'error: device outputs {bad}: expected {{"cases": [{{"image": '
                                                 f'"golden/000.png", "logits": [...]}}, ...]}}']
    proc = cli("verify", bundle, "--device-outputs", _write_json(tmp_path / "bgr.json", _device(bundle, "bgr")))
    assert proc.returncode == 1
    assert "FAIL your app feeds BGR: cosine 1.0000 with BGR input vs" in proc.stderr
    assert "cannot be told apart" not in proc.stderr          # the golden photo tells every mistake apart
    assert "whole-image resize" in proc.stderr and "bilinear resize" in proc.stderr
