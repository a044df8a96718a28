"""The quantization report's data: one `ModelReport` per model (its rows, its int8 per-layer analysis, its
failures) and the `Report` around them. How the figures are made: `schedule.py`; what to ship:
`recommend.py`; rendering (JSON, Markdown, HTML): `mobilevit_deploy.reports`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .evaluate import VariantResult

if TYPE_CHECKING:                                   # pragma: no cover
    from .layers import LayerAnalysis


@dataclass
class FileLayers:
    """The noise each layer adds in one shipped file: the per-layer engine of `mvdeploy debug`
    (`debug.run.debug_artifact`: the file's own intermediate tensors against PyTorch's, module by module)."""

    target: str
    precision: str
    engine: str
    images: int
    layers: list[dict] = field(default_factory=list)   # network order: module, kind, sqnr_db, noise_added
    why: str | None = None                             # why there are no layers (the engine cannot expose them)
    fallbacks: list[dict] = field(default_factory=list)   # measured (--fallbacks): module, kind, noise_added, file,
                                                          # accuracy, delta (points vs this file), latency_ratio,
                                                          # size_bytes, size_ratio; or module, error
    fallback_timing: str = ""                          # bench's control line for the fallbacks' latency ratios

    def worst(self, top: int = 8) -> list[dict]:
        """The layers adding the most noise power (relative to their signal), noisiest first."""
        return sorted(self.layers, key=lambda layer: -layer["noise_added"])[:top]

    def candidates(self, count: int) -> list[dict]:
        """The `count` noisiest layers a float fallback can take (convolutions and linears)."""
        from .fallback import FALLBACK_KINDS

        return [layer for layer in self.worst(len(self.layers)) if layer["kind"] in FALLBACK_KINDS][:count]

    def to_dict(self) -> dict:
        return {"target": self.target, "precision": self.precision, "engine": self.engine, "images": self.images,
                "layers": self.layers, "why": self.why, "fallbacks": self.fallbacks,
                "fallback_timing": self.fallback_timing,
                "method": "the shipped file's intermediate tensors against PyTorch's (fused), module by module: "
                          "the engine of mvdeploy debug"}


@dataclass
class ModelReport:
    model: str
    weights: str
    image_size: int
    eval_source: str
    eval_images: int                             # readable images evaluated (listed, until the shards are back)
    eval_skipped: int                            # unreadable images, counted
    calib_source: str | None
    calib_images: int
    torch_accuracy: float | None
    torch_latency_ms: tuple[float, float]        # median, p90 of PyTorch eager fp32 (unfused)
    rows: list[VariantResult] = field(default_factory=list)
    layers: LayerAnalysis | None = None          # the PT2E view: plain PT2E int8 in PyTorch, not a shipped recipe
    file_layers: list[FileLayers] = field(default_factory=list)   # per quantized file: its own per-layer noise
    failures: list[str] = field(default_factory=list)   # conversions that did not produce a file
    eval_shards: int = 0                         # evaluation tasks per variant (and for the reference)
    eval_unreadable: list[str] = field(default_factory=list)   # the unreadable images, named

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "image_size": self.image_size,
                "eval": {"source": self.eval_source, "images": self.eval_images, "shards": self.eval_shards,
                         "skipped_unreadable": self.eval_skipped, "unreadable": self.eval_unreadable},
                "calibration": {"source": self.calib_source, "images": self.calib_images},
                "torch_fp32": {"accuracy": self.torch_accuracy, "latency_ms_median": self.torch_latency_ms[0],
                               "latency_ms_p90": self.torch_latency_ms[1]},
                "rows": [r.to_dict() for r in self.rows],
                "int8_layers": self.layers.to_dict() if self.layers else None,
                "file_layers": [f.to_dict() for f in self.file_layers],
                "failures": self.failures}


@dataclass
class Report:
    command: str
    tools: dict
    models: list[ModelReport]
    executor: dict | None = None     # where the tasks ran (`scale.*Executor.describe()`), with the shard size

    def to_dict(self) -> dict:
        return {"command": self.command, "tools": self.tools, "executor": self.executor,
                "models": [m.to_dict() for m in self.models]}
