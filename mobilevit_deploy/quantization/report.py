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
    layers: LayerAnalysis | None = None
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
