"""`mvdeploy bundle`: the model, labels, bundle.json, golden self-test files and a sample app.

The bundle is staged in a hidden folder and renamed into place when complete; its zip is
deterministic (sorted entries, fixed timestamps and permissions), so the same inputs give the same
bytes.

Light at import (the pipeline and the targets load inside the functions): the CLI reads PlatformName,
GOLDEN_CASES and BUNDLES_OUT for its options.
"""
from __future__ import annotations

import enum
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from mobilevit_deploy.errors import (ArtifactError, BundleError, TargetUnavailableError, UnknownNameError,
                                     at_least)
from mobilevit_deploy.outputs import ensure_folder, move_into_place, require_writable_folder, staging
from mobilevit_deploy.spec import Artifact, Calibration, Layout, Precision, Preprocess, parse_choice
from mobilevit_deploy.versions import tool_versions

from .manifest import MANIFEST, SCHEMA_VERSION, checksums

if TYPE_CHECKING:                                   # pragma: no cover
    from mobilevit_deploy.pipeline import ParityInputs, PreparedModel

TEMPLATES = Path(__file__).parent / "templates"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)      # the earliest date a zip can hold: fixed for byte-identical zips
GOLDEN_CASES = 4                      # golden self-test images in a bundle unless asked otherwise
BUNDLES_OUT = Path("mvdeploy-out") / "bundles"   # where bundles go unless asked otherwise


class PlatformName(str, enum.Enum):
    """The platforms a bundle is written for (each with a default runtime, DEFAULT_RUNTIME)."""

    ios = "ios"
    android = "android"


@dataclass(frozen=True)
class Platform:
    """One (platform, runtime) pair: what to convert to and which sample app to write around it."""

    name: str                       # ios | android
    runtime: str                    # the on-device runtime, named by the target that feeds it
    templates: tuple[str, ...]      # folders under apps/templates, later ones adding files
    default_precision: Precision
    layout: Layout                  # what the sample app feeds
    options: dict                   # converter options the app relies on
    dependency: str = ""            # the runtime's build dependency line in the sample app

    @property
    def target(self) -> str:
        return self.runtime

    @property
    def folder_suffix(self) -> str:
        return self.name if DEFAULT_RUNTIME[self.name] == self.runtime else f"{self.name}-{self.runtime}"


PLATFORMS: dict[tuple[str, str], Platform] = {
    # Core ML + Vision: an image input (scale 1/255, mean/std inside the model), logits out.
    ("ios", "coreml"): Platform("ios", "coreml", ("ios",), Precision.fp16, Layout.nchw, {"image_input": True}),
    # LiteRT: a float (or int8) NHWC tensor in, logits out; preprocessing in Kotlin.
    ("android", "tflite"): Platform("android", "tflite", ("android", "android-litert"), Precision.fp32, Layout.nhwc,
                                    {}, 'implementation("com.google.ai.edge.litert:litert:1.4.0")'),
    # ExecuTorch's Android Module API: a float NCHW tensor in (int8 programs quantize inside), logits out.
    ("android", "executorch"): Platform("android", "executorch", ("android", "android-executorch"), Precision.fp32,
                                        Layout.nchw, {}, 'implementation("org.pytorch:executorch-android:1.0.1")'),
}
DEFAULT_RUNTIME = {"ios": "coreml", "android": "tflite"}

# Self-test tolerance on the phone against the host's outputs: phones run other kernels (GPU/ANE in
# fp16, XNNPACK), so the bound is looser than the host parity bound, and top-1 must agree.
SELF_TEST_MAX_REL = {"float": 2e-2, "quantized": 5e-2}


def get_platform(name: str | PlatformName, runtime: str | None = None) -> Platform:
    """`runtime` None: the platform's default (Core ML on iOS, LiteRT on Android)."""
    name = getattr(name, "value", name)
    if name not in DEFAULT_RUNTIME:
        raise UnknownNameError("platform", name, DEFAULT_RUNTIME)
    runtimes = {r: p for (n, r), p in PLATFORMS.items() if n == name}
    try:
        return runtimes[runtime or DEFAULT_RUNTIME[name]]
    except KeyError:
        raise UnknownNameError(f"runtime for {name}", runtime, runtimes) from None


@dataclass
class BundleResult:
    folder: Path
    zip_path: Path
    manifest: dict


def golden_cases(prepared: PreparedModel, data: Path | None, count: int) -> tuple[ParityInputs, list[int | None]]:
    """A few real images for the self-test: from `data`, the reference data, else synthetic (recorded)."""
    from mobilevit_deploy.pipeline import parity_inputs

    inputs = parity_inputs(prepared, data, synthetic=0, real=count)
    if not len(inputs.images):
        return parity_inputs(prepared, None, synthetic=count, real=0), [None] * count
    return inputs, [None] * len(inputs.images)


# The golden photo's size, in crops (width, height): larger than the crop and not square, so the shorter-side
# resize, its rounding and the center crop all run.
GOLDEN_PHOTO = (1.75, 1.3)


def _write_golden(root: Path, images: np.ndarray, labels: list[int | None], artifact: Artifact,
                  platform: Platform, pre: Preprocess) -> list[dict]:
    """golden/NNN.png, NNN_input.f32 (model layout), NNN_expected.f32 (host outputs of the artifact). The
    last case is a photo: the first image enlarged to another size and aspect (GOLDEN_PHOTO), so the app's
    self-test runs its resize and crop (bundle.json's "resampling"), as it does for a user's photo."""
    from PIL import Image

    from mobilevit_deploy.data import preprocess_image
    from mobilevit_deploy.targets import get_target

    first = Image.fromarray(pre.to_uint8(images[0]))
    photo = first.resize((round(pre.crop * GOLDEN_PHOTO[0]), round(pre.crop * GOLDEN_PHOTO[1])), Image.BICUBIC)
    feeds = np.concatenate([images, preprocess_image(photo, pre).numpy()[None]])
    target = get_target(artifact.target)
    with target.runner(artifact) as runner:
        expected = runner.infer(feeds)
    golden = root / "golden"
    golden.mkdir()
    cases = []
    for i, (x, y) in enumerate(zip(feeds, expected)):
        name = f"{i:03d}"
        feed = x.transpose(1, 2, 0) if artifact.inputs[0].layout is Layout.nhwc else x
        (photo if i == len(images) else Image.fromarray(pre.to_uint8(x))).save(golden / f"{name}.png", optimize=False)
        np.ascontiguousarray(feed, dtype="<f4").tofile(golden / f"{name}_input.f32")
        np.ascontiguousarray(y, dtype="<f4").tofile(golden / f"{name}_expected.f32")
        case = {"image": f"golden/{name}.png", "input": f"golden/{name}_input.f32",
                "expected": f"golden/{name}_expected.f32", "label": labels[i] if i < len(images) else labels[0],
                "expected_top1": int(np.argmax(y))}
        if i == len(images):
            case["resized_from"] = list(photo.size)          # [width, height]: the app resizes and crops it
        cases.append(case)
    return cases


def _fill(text: str, values: dict[str, str], where: str) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        start = text.index("{{")
        raise BundleError(f"template {where} has an unfilled placeholder {text[start:text.index('}}', start) + 2]}")
    return text


def _write_app(root: Path, platform: Platform, values: dict[str, str]) -> None:
    """The platform's sample app: the base template, then each runtime folder's files on top."""
    files: dict[Path, Path] = {}
    for template in platform.templates:
        source = TEMPLATES / template
        files.update({p.relative_to(source): p for p in source.rglob("*") if p.is_file()})
    for rel, path in sorted(files.items()):
        dest = root / "app" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_fill(path.read_text(), values, f"{platform.templates[-1]}/{rel}"))


def _template_values(manifest: dict, artifact: Artifact, platform: Platform) -> dict[str, str]:
    inp, out, pre = manifest["input"], manifest["output"], manifest["preprocessing"]
    floats = lambda xs: ", ".join(f"{v:.6g}f" for v in xs)         # Kotlin float literals
    plain = lambda xs: ", ".join(f"{v:.6g}" for v in xs)
    model_file = Path(manifest["model"]["file"]).name
    return {
        "APP_NAME": f"{manifest['model']['name']} demo",
        "MODEL_NAME": manifest["model"]["name"],
        "PRECISION": manifest["model"]["precision"],
        "WEIGHTS": manifest["model"]["weights"].replace('"', "'"),
        "MODEL_FILE": model_file,
        "MODEL_STEM": Path(model_file).stem,
        "MODEL_SUFFIX": Path(model_file).suffix.lstrip("."),
        "RUNTIME_DEPENDENCY": platform.dependency,
        "INPUT_NAME": inp["name"],
        "OUTPUT_NAME": out["name"],
        "NHWC": "true" if inp["layout"] == "nhwc" else "false",
        "LAYOUT": inp["layout"],
        "RESIZE": str(pre["resize"]),
        "CROP": str(pre["crop"]),
        "MEAN": floats(pre["mean"]) if manifest["platform"] == "android" else plain(pre["mean"]),
        "STD": floats(pre["std"]) if manifest["platform"] == "android" else plain(pre["std"]),
        "NUM_CLASSES": str(out["shape"][-1]),
        "INPUT_SCALE": f"{inp.get('scale') or 0:.9g}",
        "INPUT_ZERO_POINT": str(inp.get("zero_point") or 0),
        "OUTPUT_SCALE": f"{out.get('scale') or 0:.9g}",
        "OUTPUT_ZERO_POINT": str(out.get("zero_point") or 0),
        "GOLDEN_COUNT": str(len(manifest["golden"]["cases"])),
        "TOL_MAX_REL": f"{manifest['golden']['tolerance']['max_rel']:g}",
    }


def write_zip(folder: Path, zip_path: Path) -> None:
    """A byte-identical zip for identical folders: sorted entries, fixed dates and permissions."""
    entries = sorted(p for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in entries:
            info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3                                   # unix, whatever the host
            zf.writestr(info, path.read_bytes(), compresslevel=9)


def build_bundle(prepared: PreparedModel, platform_name: str, out_dir: Path, golden: ParityInputs,
                 golden_labels: list[int | None], labels: list[str], precision: Precision | None = None,
                 artifact_path: Path | None = None, calibration: Calibration | None = None,
                 parity: ParityInputs | None = None, runtime: str | None = None, *, data: Path | None = None,
                 calib_data: str | Path | None = None, progress: bool = False,
                 on_step: Callable[[str], None] | None = None) -> BundleResult:
    """Convert through the one convert sequence (`pipeline.convert_all`: `calibration`/`parity` as given,
    else chosen from `calib_data`/`data` as `mvdeploy convert` would), or take `artifact_path` and check
    it; then write <out>/<model>-<platform>[-<runtime>]/ and its .zip (the runtime is named only when it
    is not the platform's default)."""
    from mobilevit_deploy.data import resampling
    from mobilevit_deploy.pipeline import check_artifact, convert_all, parity_inputs
    from mobilevit_deploy.targets import get_target

    platform = get_platform(platform_name, runtime)
    target = get_target(platform.target)
    declared = resampling(prepared.preprocess.interpolation)     # the apps implement it: refused before work
    if len(labels) != prepared.num_classes:
        raise BundleError(f"{len(labels)} labels for a model with {prepared.num_classes} classes")
    out_dir = Path(out_dir)
    ensure_folder(out_dir)
    name = f"{prepared.name}-{platform.folder_suffix}"
    with staging(out_dir) as tmp:
        stage = Path(tmp) / name
        (stage / "model").mkdir(parents=True)
        options = dict(platform.options)
        if options.get("image_input"):
            options["preprocess"] = {"mean": list(prepared.preprocess.mean), "std": list(prepared.preprocess.std)}
        if artifact_path is None:
            spec = prepared.spec(precision or platform.default_precision, layout=platform.layout,
                                 options=target.options(**options))
            result = convert_all(prepared, target, [spec], stage / "model", calibration=calibration,
                                 calib_data=calib_data, inputs=parity, data=data, progress=progress,
                                 on_step=on_step).results[0]
            artifact, report = result.artifact, result.report
        else:
            artifact = target.load(Path(artifact_path))
            dest = stage / "model" / Path(artifact_path).name
            (shutil.copytree if Path(artifact_path).is_dir() else shutil.copy2)(artifact_path, dest)
            artifact = target.load(dest)
            inputs = parity or parity_inputs(prepared, data, progress=progress)
            report = check_artifact(artifact, target, prepared, inputs, label=dest)
        if not report.passed:
            raise BundleError(f"parity failed, no bundle written: {report.failures[0]}")
        report.artifact = f"model/{Path(artifact.path).name}"     # relative: the bundle moves, bytes stay
        report.write(stage / "model" / f"{Path(artifact.path).name}.parity.json")
        (stage / "labels.txt").write_text("\n".join(labels) + "\n")
        cases = _write_golden(stage, golden.images, golden_labels, artifact, platform, prepared.preprocess)
        quantized = artifact.precision not in (Precision.fp32, Precision.fp16)
        inp, out = artifact.inputs[0], artifact.outputs[0]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "platform": platform.name,
            "runtime": platform.runtime,
            "model": {"name": prepared.name, "weights": prepared.weights, "target": platform.target,
                      "precision": artifact.precision.value, "converter": artifact.converter,
                      "file": f"model/{Path(artifact.path).name}",
                      # how the weights were read: e.g. a BGR-trained stem folded to take RGB, resized tables
                      "weights_notes": list(prepared.notes)},
            "input": {"name": inp.name, "shape": list(inp.shape), "layout": (inp.layout or Layout.nchw).value,
                      "dtype": inp.dtype, "kind": "image" if options.get("image_input") else "tensor",
                      "scale": inp.scale, "zero_point": inp.zero_point},
            "preprocessing": {**prepared.preprocess.to_dict(),          # the apps' resize, declared exactly
                              "resampling": declared},
            "output": {"name": out.name, "shape": list(out.shape), "dtype": out.dtype, "meaning": "logits",
                       "scale": out.scale, "zero_point": out.zero_point},
            "labels": "labels.txt",
            "golden": {"source": golden.source or "synthetic", "cases": cases,
                       "tolerance": {"max_rel": SELF_TEST_MAX_REL["quantized" if quantized else "float"],
                                     "top1_agreement": 1.0},
                       "expected_from": report.engine},
            "parity": {"passed": report.passed, "engine": report.engine,
                       "metrics": report.metrics.to_dict() if report.metrics else None,
                       "tolerance": report.tolerance.to_dict(), "samples": report.samples},
            "tools": tool_versions(),
        }
        _write_app(stage, platform, _template_values(manifest, artifact, platform))
        manifest["files"] = checksums(stage)
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        zip_stage = Path(tmp) / f"{name}.zip"
        write_zip(stage, zip_stage)
        move_into_place(stage, out_dir / name)
        move_into_place(zip_stage, out_dir / f"{name}.zip")
    return BundleResult(out_dir / name, out_dir / f"{name}.zip", manifest)


def bundle_model(model: str | None, platform: str | PlatformName, out: Path, *, runtime: str | None = None,
                 precision: str | None = None, weights: Path | str | None = None, weights_format: str | None = None,
                 image_size: int | None = None, num_classes: int | None = None, labels: Path | None = None,
                 data: Path | None = None, calib_data: str | None = None, artifact: Path | None = None,
                 golden: int = GOLDEN_CASES, progress: bool = False,
                 on_step: Callable[[str], None] | None = None) -> BundleResult:
    """`mvdeploy bundle` as one call: what cannot work is refused before any work; then the model, its
    class names and `golden` self-test images, and `build_bundle` (calibration and parity images chosen
    by the convert sequence from `calib_data` and `data`). `precision` None: the platform's default;
    `model` None: the one a Hugging Face `weights` folder describes (`pipeline.model_for`)."""
    from mobilevit_deploy.pipeline import model_for, prepare_model
    from mobilevit_deploy.targets import get_target

    at_least(golden, 1, "--golden")
    model = model_for(model, weights)
    require_writable_folder(out)
    plat = get_platform(platform, runtime)
    chosen = parse_choice(Precision, precision, "precision") if precision else plat.default_precision
    if artifact is not None and not Path(artifact).exists():
        raise ArtifactError(f"artifact {artifact} does not exist")
    reason = get_target(plat.target).unavailable_reason()
    if reason:
        raise TargetUnavailableError(reason)
    prepared = prepare_model(model, weights, num_classes, image_size, weights_format=weights_format)
    class_names = prepared.class_names(labels)
    golden_inputs, golden_labels = golden_cases(prepared, data, golden)
    return build_bundle(prepared, plat.name, out, golden_inputs, golden_labels, class_names, chosen, artifact,
                        runtime=plat.runtime, data=data, calib_data=calib_data, progress=progress, on_step=on_step)
