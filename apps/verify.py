"""`mvdeploy verify BUNDLE`: schema, checksums, safe zip paths, and the golden self-test on the host;
with an app's device outputs, their comparison and the preprocessing diagnosis (apps/diagnose.py).

Every problem is one line; the bundle passes only when the list is empty.
"""
from __future__ import annotations

import json
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from mobilevit_deploy.arm64 import require_arm64
from mobilevit_deploy.emulation import CpuProfile
from mobilevit_deploy.errors import MvDeployError, first_line
from mobilevit_deploy.parity import compare
from mobilevit_deploy.spec import Layout
from mobilevit_deploy.targets import get_target

from .diagnose import DeviceCheck, DeviceOutputs, check_device_outputs
from .manifest import MANIFEST, bundle_files, schema_failures, sha256


@dataclass
class Verification:
    bundle: str
    failures: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)     # what was verified and held
    engine: str | None = None
    device: DeviceCheck | None = None                     # the app's outputs, when given

    @property
    def passed(self) -> bool:
        return not self.failures


# A bundle holds one model (swin_tiny fp32 is 115 MB) and small files; model bytes barely compress.
MAX_UNCOMPRESSED_BYTES = 2 << 30
MAX_RATIO = 100                      # uncompressed / compressed over the whole zip (zeros compress ~1000x)
SUPPORTED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def unsafe_zip_entries(zf: zipfile.ZipFile) -> list[str]:
    """Entries that could write outside the extraction folder (absolute paths, '..', links), or that
    cannot be extracted safely (encrypted, unknown compression, a zip bomb), found before extracting."""
    bad = []
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > MAX_UNCOMPRESSED_BYTES:
        bad.append(f"the zip would expand to {total / 1e9:.1f} GB (a bundle holds at most {MAX_UNCOMPRESSED_BYTES / 1e9:.1f} GB)")
    elif total > (16 << 20) and total / packed > MAX_RATIO:
        bad.append(f"the zip expands {total / packed:.0f}x ({packed:,} -> {total:,} bytes): refused as a zip bomb")
    for info in infos:
        if info.flag_bits & 0x1:
            bad.append(f"zip entry '{info.filename}' is encrypted")
        if info.compress_type not in SUPPORTED_COMPRESSION:
            bad.append(f"zip entry '{info.filename}' uses compression method {info.compress_type}, "
                       "which bundles never use")
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or info.filename.startswith(("/", "\\")) or ":" in path.parts[0]:
            bad.append(f"zip entry '{info.filename}' has an absolute path")
        elif ".." in path.parts:
            bad.append(f"zip entry '{info.filename}' climbs out of the bundle ('..')")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            bad.append(f"zip entry '{info.filename}' is a symbolic link")
    return bad


def _golden(root: Path, manifest: dict, result: Verification, arm_cpus: Sequence[CpuProfile] = ()) -> None:
    """The golden self-test on this machine's engine, then on its ARM64 build on each of `arm_cpus`."""
    model_path = root / manifest["model"]["file"]
    target = get_target(manifest["model"]["target"])
    artifact = target.load(model_path)
    nhwc = artifact.inputs[0].layout is Layout.nhwc
    tol = manifest["golden"]["tolerance"]
    feeds, expected = [], []
    photos = 0
    for case in manifest["golden"]["cases"]:
        shape = manifest["input"]["shape"][1:]
        x = np.fromfile(root / case["input"], dtype="<f4").reshape(shape)
        x = x.transpose(2, 0, 1) if nhwc else x                           # canonical [3, H, W]
        if case.get("resized_from"):                                      # a photo: the declared resize, run here
            x = _declared_preprocessing(root / case["image"], manifest, x, result)
            photos += 1
        feeds.append(x)
        expected.append(np.fromfile(root / case["expected"], dtype="<f4"))
    require_arm64(target, arm_cpus)
    for cpu in (None, *arm_cpus):
        where = "" if cpu is None else f" on arm64 {cpu.name}"
        with target.runner(artifact, **({} if cpu is None else {"arm_cpu": cpu})) as runner:
            engine = runner.engine
            got = runner.infer(np.stack(feeds))
        result.engine = result.engine or engine
        failed = len(result.failures)
        for i, (g, e) in enumerate(zip(got, expected)):
            m = compare(e[None], g[None])
            top1 = int(np.argmax(g)) == int(np.argmax(e))
            if m.max_rel > tol["max_rel"] or not top1 or m.nonfinite:
                result.failures.append(f"golden case {i:03d}{where}: max_rel {m.max_rel:.3g} (bound {tol['max_rel']:g}), "
                                       f"top-1 {'agrees' if top1 else 'differs'}")
        if len(result.failures) == failed:
            result.verified.append(f"{len(expected)} golden cases on {engine}"
                                   + (f" ({photos} a photo resized as bundle.json declares)" if photos else ""))


def _declared_preprocessing(png: Path, manifest: dict, stored: np.ndarray, result: Verification) -> np.ndarray:
    """A golden photo through the preprocessing bundle.json declares (mvdeploy's reference of it), which
    must give the input tensor the bundle stores for it."""
    from PIL import Image

    from mobilevit_deploy.data import preprocess_image, resampling
    from mobilevit_deploy.spec import Preprocess

    pre = Preprocess.from_dict(manifest["preprocessing"])
    if manifest["preprocessing"].get("resampling") != resampling(pre.interpolation):
        result.failures.append(f"bundle.json declares a resampling this mvdeploy does not implement: "
                               f"{manifest['preprocessing'].get('resampling', {}).get('name')}")
    with Image.open(png) as image:
        x = preprocess_image(image, pre).numpy()
    difference = float(np.abs(x - stored).max())
    if difference > 1e-5:
        result.failures.append(f"{png.parent.name}/{png.name}: the declared preprocessing gives another tensor "
                               f"than the bundle stores (max abs {difference:.3g})")
    return x


def _device(root: Path, manifest: dict, device: DeviceOutputs, result: Verification) -> None:
    if result.failures:
        result.failures.append("device outputs not checked: the golden self-test fails on this host already")
        return
    try:
        result.device = check_device_outputs(root, manifest, device)
    except MvDeployError as e:
        result.failures.append(str(e))
        return
    except (ValueError, OSError, KeyError, TypeError) as e:      # golden files that do not fit the manifest
        result.failures.append(f"device outputs could not be checked: {type(e).__name__}: {first_line(e)}")
        return
    result.verified.extend(c.line(result.device.bound) for c in result.device.cases if c.passed)
    result.failures.extend(result.device.failures())


def verify_folder(root: Path, result: Verification, device: DeviceOutputs | None = None,
                  arm_cpus: Sequence[CpuProfile] = ()) -> Verification:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        result.failures.append(f"{MANIFEST} is missing")
        return result
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        result.failures.append(f"{MANIFEST} is not valid JSON: {e}")
        return result
    schema = schema_failures(manifest)
    if schema:
        result.failures.extend(schema)
        return result
    result.verified.append("schema")
    listed = manifest["files"]
    present = {p.as_posix() for p in bundle_files(root)}
    for rel, digest in sorted(listed.items()):
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            result.failures.append(f"bundle.json lists an unsafe path '{rel}'")
        elif rel not in present:
            result.failures.append(f"missing file {rel}")
        elif sha256(root / rel) != digest:
            result.failures.append(f"checksum mismatch: {rel}")
    model_file = manifest["model"]["file"]
    if model_file not in listed and not any(rel.startswith(model_file.rstrip("/") + "/") for rel in listed):
        result.failures.append(f"bundle.json: model.file '{manifest['model']['file']}' is not among the checksummed files")
    for rel in sorted(present - set(listed)):
        result.failures.append(f"file not listed in bundle.json: {rel}")
    links = [p for p in root.rglob("*") if p.is_symlink()]
    result.failures.extend(f"symbolic link in bundle: {p.relative_to(root)}" for p in links)
    if result.failures:
        return result                         # do not run a model whose bytes are not the listed ones
    result.verified.append(f"{len(listed)} checksums")
    try:
        _golden(root, manifest, result, arm_cpus)
    except MvDeployError as e:
        result.failures.append(f"golden self-test could not run: {e}")
    except (ValueError, OSError, KeyError, TypeError) as e:      # golden files that do not fit the manifest
        result.failures.append(f"golden self-test could not run: {type(e).__name__}: {first_line(e)}")
    if device is not None:
        _device(root, manifest, device, result)
    return result


def verify(bundle: Path, device: DeviceOutputs | None = None, arm_cpus: Sequence[CpuProfile] = ()) -> Verification:
    """Verify a bundle folder or zip; with `device` (read_device_outputs), also the app's own outputs;
    with `arm_cpus`, the golden self-test also on the engine's ARM64 build on those emulated CPUs."""
    bundle = Path(bundle)
    result = Verification(str(bundle))
    if bundle.is_dir():
        return verify_folder(bundle, result, device, arm_cpus)
    if not bundle.is_file():
        result.failures.append(f"{bundle} does not exist")
        return result
    try:
        zf = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError, ValueError):
        result.failures.append(f"{bundle} is neither a bundle folder nor a zip")
        return result
    with zf, tempfile.TemporaryDirectory(prefix="mvdeploy-verify-") as tmp:
        unsafe = unsafe_zip_entries(zf)
        if unsafe:
            result.failures.extend(unsafe)
            return result                     # never extract an unsafe zip
        result.verified.append("zip paths")
        try:
            zf.extractall(tmp)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError, zlib.error) as e:
            result.failures.append(f"{bundle} cannot be extracted: {first_line(e)}")   # e.g. a bad CRC-32
            return result
        tops = {PurePosixPath(n).parts[0] for n in zf.namelist()}
        root = Path(tmp)
        if len(tops) == 1 and (root / next(iter(tops))).is_dir():     # the zip holds one bundle folder
            root = root / next(iter(tops))
        return verify_folder(root, result, device, arm_cpus)
