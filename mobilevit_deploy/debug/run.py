"""`debug`: run PyTorch and an exported file side by side, layer by layer, and name where they part."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..fusion import fuse
from ..parity.compare import Metrics, compare, noise_added
from ..parity.tolerances import tolerance_for
from .align import UNMAPPED, Mapping, align, counts
from .capture import capture_torch, engine_capture, workspace
from .report import DebugReport, LayerRecord, sqnr_drops, write

SYNTHETIC_IMAGES = 2      # per run: seeded synthetic images ...
REAL_IMAGES = 2           # ... plus real ones (--data, else the reference checkpoint's test split)


def _as_reference(candidate: np.ndarray, reference: np.ndarray, layout: str) -> np.ndarray:
    """An artifact tensor [N, ...] in the PyTorch output's layout [N, ...]."""
    if layout == "nhwc":
        candidate = candidate.transpose(0, 1, 4, 2, 3)        # [N, 1, H, W, C] -> [N, 1, C, H, W]
    return candidate.reshape(reference.shape)


def layer_metrics(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """The parity metrics of one layer's outputs [N, D] (no top-k: a feature map has no classes)."""
    return compare(reference, candidate, classes=False)


def debug_file(path: Path, model: str, weights: Path | str | None = None, num_classes: int | None = None,
               data: Path | None = None, write_files: bool = True) -> DebugReport:
    """Compare every mappable module of the fused PyTorch model (as exported) with the artifact's
    intermediate values; write <artifact>.debug.json and .debug.html beside it."""
    from ..pipeline import load_for_model

    path = Path(path)
    target, artifact, prepared = load_for_model(path, model, weights, num_classes)
    report = debug_artifact(target, artifact, prepared, data)
    if write_files:
        write(report, path)
    return report


def debug_artifact(target, artifact, prepared, data: Path | None = None) -> DebugReport:
    """The per-layer engine: every mappable module of `prepared`'s fused model against the artifact's
    own intermediate values (the report's per-layer table and the accuracy budget rank layers with it)."""
    from ..pipeline import parity_inputs, require_fit

    require_fit(artifact, prepared)
    inputs = parity_inputs(prepared, data, synthetic=SYNTHETIC_IMAGES, real=REAL_IMAGES)
    exported = fuse(prepared.model).model
    modules, reference = capture_torch(exported, inputs.images)
    names = {m.name for m in modules} | {n for n, _ in exported.named_modules() if n}

    with workspace() as tmp, engine_capture(target, artifact, names, Path(tmp)) as capture:
        tensors = capture.tensors(inputs.images[0])
        mappings = [m if m.tensor is None or m.tensor.key is not None else replace(m, tensor=None, method=UNMAPPED)
                    for m in align(modules, tensors, capture.nhwc_first)]   # key None: computed, not fetchable
        keys = list(dict.fromkeys(m.tensor.key for m in mappings if m.tensor is not None))
        values = capture.values(keys, inputs.images)
        engine = capture.engine

    tolerance = tolerance_for(target, artifact.precision)
    kinds = {m.name: m for m in modules}
    mapped = [m for m in mappings if m.tensor is not None]
    metrics = [layer_metrics(reference[m.module].reshape(len(inputs.images), -1),
                             _as_reference(values[m.tensor.key], reference[m.module], m.layout)
                             .reshape(len(inputs.images), -1)) for m in mapped]
    sqnrs = [x.sqnr_db for x in metrics]
    layers = [_record(m, kinds[m.module], x, drop, noise, tolerance.failures(x, trained=False))
              for m, x, drop, noise in zip(mapped, metrics, sqnr_drops(sqnrs), noise_added(sqnrs))]
    return DebugReport(
        artifact=str(artifact.path), model=prepared.name, target=target.name, precision=artifact.precision.value,
        engine=engine, reference=f"torch, {prepared.name} fused as exported, per module (forward hooks)",
        images=inputs.describe(), tolerance=tolerance, layers=layers, mapped=counts(mappings),
        unmapped=[m.module for m in mappings if m.method == UNMAPPED],
        notes=[f"{len(modules)} modules produce one float tensor per call; "
               f"{len(tensors)} artifact tensors were candidates"])


def _record(mapping: Mapping, module, metrics, drop: float, noise: float, failures: list[str]) -> LayerRecord:
    return LayerRecord(mapping.module, module.kind, mapping.method, mapping.tensor.name, mapping.layout,
                       list(module.shape), metrics, drop, noise, failures)
