"""Preprocessing diagnosis: an app's logits for the golden images against the bundle's expected ones,
and, when they disagree, which usual preprocessing mistake explains them.

Device outputs are the JSON the sample apps' self-test writes (`device_outputs.json`):

    {"cases": [{"image": "golden/000.png", "logits": [1.25, -0.5, ...]}, ...]}

one case per golden image, matched to bundle.json's golden cases by `image` path; `logits` are the raw
output values (dequantized for integer outputs). Other keys (the apps add "device") are ignored.

When a case disagrees (the golden self-test's own bound: bundle.json golden.tolerance), the golden
PNGs are run again on this host, through the bundle's own model and its target's runner, once as
specified and once under each usual mistake, and the mistake whose outputs match the device's is named:
"your app feeds BGR: cosine 1.0000 with BGR input vs 0.6133 as specified".
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from mobilevit_deploy.errors import BundleError
from mobilevit_deploy.parity import compare
from mobilevit_deploy.spec import Layout, Preprocess
from mobilevit_deploy.targets import get_target

DEVICE_OUTPUTS = "device_outputs.json"      # the file name the sample apps write


# -- reading what the app wrote ------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceOutputs:
    source: str                              # the file it came from, for messages
    logits: dict[str, np.ndarray]            # golden image path (as in bundle.json) -> logits [K]


def _case_path(value: str) -> str:
    return PurePosixPath(value.replace("\\", "/")).as_posix()


def read_device_outputs(path: Path) -> DeviceOutputs:
    """The app's device-outputs JSON; anything malformed is a BundleError naming the first problem."""
    path = Path(path)
    where = f"device outputs {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{where} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{where} cannot be read ({type(e).__name__})") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{where} is not valid JSON: {e}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases:
        raise BundleError(f'{where}: expected {{"cases": [{{"image": "golden/000.png", "logits": [...]}}, ...]}}')
    logits: dict[str, np.ndarray] = {}
    for i, case in enumerate(cases):
        image = case.get("image") if isinstance(case, dict) else None
        values = case.get("logits") if isinstance(case, dict) else None
        if not isinstance(image, str) or not image:
            raise BundleError(f'{where}: cases[{i}] has no "image" path')
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise BundleError(f'{where}: cases[{i}] ({image}) has no "logits" list of numbers')
        key = _case_path(image)
        if key in logits:
            raise BundleError(f"{where}: {image} appears twice")
        logits[key] = np.asarray(values, dtype=np.float32)
    return DeviceOutputs(str(path), logits)


# -- how an app gets preprocessing wrong -----------------------------------------------------------

@dataclass(frozen=True)
class Mistake:
    name: str       # key in MISTAKES
    title: str      # the usual name of the mistake
    says: str       # the verdict: what the app does
    feeds: str      # the host input it is compared with: "cosine 0.99 with <feeds>"


MISTAKES: dict[str, Mistake] = {
    "bgr": Mistake("bgr", "RGB vs BGR", "your app feeds BGR", "BGR input"),
    "0-255": Mistake("0-255", "0-255 vs 0-1", "your app scales pixels to 0-255, not 0-1", "0-255 input"),
    "no-mean-std": Mistake("no-mean-std", "missing mean/std", "your app skips the mean/std normalization",
                           "no mean/std"),
    "layout": Mistake("layout", "NHWC vs NCHW", "your app hands the tensor in {other} order to an {layout} input",
                      "{other} input"),
    "resize": Mistake("resize", "resize vs crop", "your app resizes the whole image to {crop}x{crop} instead of "
                      "resizing the shorter side to {resize} and center-cropping", "whole-image resize"),
    "resampling": Mistake("resampling", "bilinear vs bicubic", "your app resizes with bilinear interpolation, "
                          "not the {interpolation} that bundle.json declares", "bilinear resize"),
}


def _other(layout: Layout) -> Layout:
    return Layout.nchw if layout is Layout.nhwc else Layout.nhwc


def _pixels01(image: np.ndarray, pre: Preprocess, whole: bool, bilinear: bool = False) -> np.ndarray:
    """HWC uint8 RGB -> [3, crop, crop] in [0, 1]. An image already crop x crop is the model's input
    (the golden PNGs are) and is used as is; a larger one is resized (shorter side, then center crop,
    as `data.preprocess_image` does; with `bilinear`, by Pillow's bilinear instead of the declared
    resampling), or with `whole` squeezed to crop x crop in one resize."""
    from PIL import Image

    from mobilevit_deploy.data import preprocess_image

    h, w = image.shape[:2]
    if (h, w) == (pre.crop, pre.crop):
        pixels = image
    elif whole:
        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[pre.interpolation]
        pixels = np.asarray(Image.fromarray(image).resize((pre.crop, pre.crop), resample))
    else:
        plain = replace(pre, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                        interpolation="bilinear" if bilinear else pre.interpolation)
        return preprocess_image(Image.fromarray(image), plain).numpy()
    return pixels.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)


def app_input(image: np.ndarray, pre: Preprocess, layout: Layout, mistake: str | None = None) -> np.ndarray:
    """What an app hands the model for one image (HWC uint8 RGB), in the canonical [3, crop, crop]:
    as specified (`mistake` None) or with one of MISTAKES."""
    x = _pixels01(image, pre, whole=mistake == "resize", bilinear=mistake == "resampling")   # [3, H, W] RGB, [0, 1]
    if mistake == "bgr":
        x = x[::-1]                                                 # channels swapped, mean/std kept in RGB order
    if mistake == "0-255":
        x = x * np.float32(255.0)                                   # the /255 forgotten
    if mistake != "no-mean-std":
        x = pre.normalize(x)
    if mistake == "layout":                                         # the buffer written in the other order
        c, h, w = x.shape
        if layout is Layout.nhwc:
            x = x.reshape(-1).reshape(h, w, c).transpose(2, 0, 1)   # CHW bytes read as HWC
        else:
            x = x.transpose(1, 2, 0).reshape(-1).reshape(c, h, w)   # HWC bytes read as CHW
    return np.ascontiguousarray(x, dtype=np.float32)


def indistinct(mistake: str, pre: Preprocess, kind: str, sizes: list[tuple[int, int]]) -> str | None:
    """Why `mistake` cannot be told apart from the specified preprocessing with these golden images
    (None when it can)."""
    if kind == "image" and mistake in ("0-255", "no-mean-std", "layout"):
        return "the model takes an image and scales, normalizes and lays it out itself"
    if mistake == "no-mean-std" and all(m == 0 for m in pre.mean) and all(s == 1 for s in pre.std):
        return "the preprocessing has no mean/std (mean 0, std 1), so skipping it changes nothing"
    if mistake in ("resize", "resampling") and all(size == (pre.crop, pre.crop) for size in sizes):
        return (f"the golden images are already {pre.crop}x{pre.crop}, so no resize runs on them")
    if mistake == "resampling" and pre.interpolation == "bilinear":
        return "the declared resampling is bilinear already"
    return None


# -- the result ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseCheck:
    image: str
    max_rel: float
    cosine: float
    top1_agrees: bool
    nonfinite: int
    passed: bool

    def line(self, bound: float) -> str:
        nonfinite = f", {self.nonfinite} NaN/Inf" if self.nonfinite else ""
        return (f"device {self.image}: max_rel {self.max_rel:.3g} (bound {bound:g}), cosine {self.cosine:.4f}, "
                f"top-1 {'agrees' if self.top1_agrees else 'differs'}{nonfinite}")


@dataclass(frozen=True)
class Hypothesis:
    """The host's outputs under one preprocessing, against the device's."""

    mistake: str | None          # None: as specified
    feeds: str                   # "BGR input", "as specified"
    says: str                    # the verdict when this one matches
    cosine: float                # mean over cases of cos(device, host)
    max_rel: float               # max over cases
    matches: bool                # within the golden bound on every case, top-1 agreeing

    def line(self) -> str:
        return (f"{self.feeds:<20} cosine {self.cosine:.4f}, max_rel {self.max_rel:.3g}"
                + (", matches the device" if self.matches else ""))


@dataclass
class DeviceCheck:
    source: str
    bound: float                                                    # golden.tolerance.max_rel
    cases: list[CaseCheck] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)                # golden images the file has no logits for
    hypotheses: list[Hypothesis] = field(default_factory=list)      # empty unless a case disagreed
    indistinct: dict[str, str] = field(default_factory=dict)        # mistake -> why it cannot be told apart
    engine: str | None = None                                       # what ran the hypotheses

    @property
    def passed(self) -> bool:
        return not self.missing and all(c.passed for c in self.cases)

    def matching(self) -> list[Hypothesis]:
        """The mistakes whose outputs match the device's, closest first."""
        found = [h for h in self.hypotheses if h.mistake is not None and h.matches]
        return sorted(found, key=lambda h: (-h.cosine, h.max_rel))

    @property
    def diagnosis(self) -> Hypothesis | None:
        """The mistake whose outputs match the device's (the closest when several do), else None."""
        found = self.matching()
        return found[0] if found else None

    def verdict(self) -> str | None:
        """One line naming the mistake, or saying that none explains the outputs (None: nothing diagnosed)."""
        if not self.hypotheses:
            return None
        specified = next(h for h in self.hypotheses if h.mistake is None)
        if specified.matches:
            return (f"the device outputs match this host's for the golden images as specified (cosine "
                    f"{specified.cosine:.4f}) but not the expected outputs: the bundle's PNGs and input "
                    "tensors disagree")
        best, *also = self.matching() or [None]
        if best is not None:
            line = f"{best.says}: cosine {best.cosine:.4f} with {best.feeds} vs {specified.cosine:.4f} as specified"
            if also:           # e.g. 0-255 and no mean/std after a LayerNorm: nearly the same outputs
                verb = "matches" if len(also) == 1 else "match"
                line += (f" ({', '.join(h.feeds for h in also)} {verb} as well, cosine {also[0].cosine:.4f}: "
                         "this model barely tells them apart)")
            return line
        closest = max(self.hypotheses, key=lambda h: h.cosine)
        if closest.mistake is None:
            return (f"no usual preprocessing mistake explains the device outputs: the specified preprocessing is "
                    f"closest (cosine {specified.cosine:.4f}), so look at the model file and the runtime on the device")
        return (f"no usual preprocessing mistake explains the device outputs (closest: {closest.feeds}, cosine "
                f"{closest.cosine:.4f}, vs {specified.cosine:.4f} as specified)")

    def failures(self) -> list[str]:
        lines = [c.line(self.bound) for c in self.cases if not c.passed]
        lines += [f"device outputs have no logits for {image}" for image in self.missing]
        verdict = self.verdict()
        return lines + ([verdict] if verdict else [])

    def details(self) -> list[str]:
        """The evidence behind the verdict: one line per preprocessing tried or not told apart."""
        lines = [h.line() for h in self.hypotheses]
        lines += [f"{MISTAKES[m].title:<20} cannot be told apart: {why}" for m, why in self.indistinct.items()]
        return lines


# -- the check -------------------------------------------------------------------------------------

def _agrees(metrics, bound: float) -> bool:
    return metrics.max_rel <= bound and metrics.top1_agreement == 1.0 and not metrics.nonfinite


def check_device_outputs(root: Path, manifest: dict, device: DeviceOutputs) -> DeviceCheck:
    """Compare the device's logits with the bundle's expected ones; when they disagree, try the usual
    preprocessing mistakes on this host and record which one matches. `manifest` is the bundle's
    (already verified) bundle.json, `root` its folder."""
    root = Path(root)
    bound = float(manifest["golden"]["tolerance"]["max_rel"])
    result = DeviceCheck(device.source, bound)
    golden = {_case_path(c["image"]): c for c in manifest["golden"]["cases"]}
    unknown = sorted(set(device.logits) - set(golden))
    if unknown:
        raise BundleError(f"device outputs {device.source}: {unknown[0]} is not a golden image of this bundle "
                          f"(golden: {', '.join(sorted(golden))})")
    classes = int(manifest["output"]["shape"][-1])
    for image, logits in device.logits.items():
        if logits.size != classes:
            raise BundleError(f"device outputs {device.source}: {image} has {logits.size} logits, "
                              f"the model gives {classes}")
    result.missing = [image for image in golden if image not in device.logits]
    present = [image for image in golden if image in device.logits]
    got = np.stack([device.logits[image] for image in present])
    for image, g in zip(present, got):
        expected = np.fromfile(root / golden[image]["expected"], dtype="<f4")
        m = compare(expected[None], g[None])
        result.cases.append(CaseCheck(image, m.max_rel, m.cosine_mean, m.top1_agreement == 1.0, m.nonfinite,
                                      _agrees(m, bound)))
    if not all(c.passed for c in result.cases):
        _diagnose(root, manifest, present, got, result)
    return result


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _diagnose(root: Path, manifest: dict, images: list[str], got: np.ndarray, result: DeviceCheck) -> None:
    """Run the golden PNGs on this host as specified and under each mistake; fill result.hypotheses."""
    pre = Preprocess.from_dict(manifest["preprocessing"])
    layout = Layout(manifest["input"]["layout"])
    kind = manifest["input"].get("kind", "tensor")
    pngs = [_read_png(root / image) for image in images]
    sizes = [p.shape[:2] for p in pngs]
    tried: list[str | None] = [None]
    for name in MISTAKES:
        why = indistinct(name, pre, kind, sizes)
        if why:
            result.indistinct[name] = why
        else:
            tried.append(name)
    feeds = np.stack([app_input(p, pre, layout, mistake) for mistake in tried for p in pngs])
    target = get_target(manifest["model"]["target"])
    artifact = target.load(root / manifest["model"]["file"])
    with target.runner(artifact) as runner:
        result.engine = runner.engine
        host = runner.infer(feeds).reshape(len(tried), len(pngs), -1)
    words = {"other": _other(layout).value.upper(), "layout": layout.value.upper(),
             "crop": pre.crop, "resize": pre.resize, "interpolation": pre.interpolation}
    for mistake, outputs in zip(tried, host):
        m = compare(outputs, got)
        if mistake is None:
            feeds_as, says = "as specified", "your app preprocesses as specified"
        else:
            feeds_as, says = MISTAKES[mistake].feeds.format(**words), MISTAKES[mistake].says.format(**words)
        cos = m.cosine_mean if math.isfinite(m.cosine_mean) else 0.0
        result.hypotheses.append(Hypothesis(mistake, feeds_as, says, cos, m.max_rel, _agrees(m, result.bound)))
