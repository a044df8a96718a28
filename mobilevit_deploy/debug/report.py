"""The debug report: one record per mapped module, the first divergence, and its JSON and HTML forms."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..outputs import write_text_atomic
from ..parity.compare import SQNR_CAP_DB, Metrics
from ..parity.tolerances import Tolerance


@dataclass
class LayerRecord:
    module: str                 # qualified name, as in named_modules()
    kind: str                   # the module's class
    method: str                 # "name" or "matched" (see debug.align)
    tensor: str                 # the artifact tensor compared
    layout: str                 # "same", "nhwc" (transposed to NCHW) or "reshape"
    shape: list[int]            # the PyTorch output's shape
    metrics: Metrics
    sqnr_drop_db: float         # SQNR lost since the previous mapped layer
    noise_added: float          # noise power / signal power added since the previous mapped layer (the
                                # report's per-layer measure: dB drops overweight layers that are still clean)
    failures: list[str]         # bounds of the precision's tolerance this layer breaks

    def to_dict(self) -> dict:
        m = self.metrics
        return {"module": self.module, "kind": self.kind, "method": self.method, "tensor": self.tensor,
                "layout": self.layout, "shape": self.shape, "sqnr_db": m.sqnr_db, "max_rel": m.max_rel,
                "max_abs": m.max_abs, "cosine_min": m.cosine_min, "nonfinite": m.nonfinite,
                "sqnr_drop_db": self.sqnr_drop_db, "noise_added": self.noise_added, "failures": self.failures}


@dataclass
class DebugReport:
    artifact: str
    model: str
    target: str
    precision: str
    engine: str
    reference: str
    images: dict
    tolerance: Tolerance
    layers: list[LayerRecord]
    mapped: dict[str, int]          # {"name": n, "matched": n, "unmapped": n}
    unmapped: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def first_divergence(self) -> str | None:
        """The first module (network order) whose output breaks the precision's tolerance."""
        return next((layer.module for layer in self.layers if layer.failures), None)

    def ranking(self, top: int = 10) -> list[LayerRecord]:
        """The layers that add the most noise (relative noise power added since the previous mapped layer)."""
        return sorted(self.layers, key=lambda layer: -layer.noise_added)[:top]

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "model": self.model, "target": self.target,
                "precision": self.precision, "engine": self.engine, "reference": self.reference,
                "images": self.images, "tolerance": self.tolerance.to_dict(),
                "first_divergence": self.first_divergence,
                "noise_ranking": [{"module": r.module, "noise_added": r.noise_added, "sqnr_drop_db": r.sqnr_drop_db,
                                   "sqnr_db": r.metrics.sqnr_db}
                                  for r in self.ranking()],
                "mapped": self.mapped, "unmapped": self.unmapped,
                "layers": [layer.to_dict() for layer in self.layers], "notes": self.notes}


def sqnr_drops(sqnrs: list[float]) -> list[float]:
    """SQNR lost at each layer against the one before (the input counts as exact)."""
    previous = SQNR_CAP_DB
    out = []
    for value in sqnrs:
        out.append(previous - value)
        previous = value
    return out


def debug_paths(artifact: Path) -> tuple[Path, Path]:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".debug.json"), artifact.with_name(artifact.name + ".debug.html")


def write(report: DebugReport, artifact: Path) -> tuple[Path, Path]:
    """<artifact>.debug.json and <artifact>.debug.html beside the artifact, each written atomically
    (both rendered before either is written)."""
    json_path, html_path = debug_paths(artifact)
    texts = (json.dumps(report.to_dict(), indent=2) + "\n", to_html(report))
    write_text_atomic(json_path, texts[0])
    write_text_atomic(html_path, texts[1])
    return json_path, html_path


def _plot(report: DebugReport) -> str:
    from ..figures import png_base64, pyplot

    plt = pyplot()
    layers = report.layers
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = list(range(len(layers)))
    ax.plot(x, [layer.metrics.sqnr_db for layer in layers], marker=".", linewidth=1, label="SQNR dB")
    ax.set_xlabel("mapped module (network order)")
    ax.set_ylabel("SQNR vs PyTorch (dB)")
    if report.tolerance.sqnr_db is not None:
        ax.axhline(report.tolerance.sqnr_db, linestyle=":", color="gray", linewidth=1, label="tolerance")
    first = report.first_divergence
    if first is not None:
        i = next(i for i, layer in enumerate(layers) if layer.module == first)
        ax.axvline(i, color="red", linewidth=1)
        ax.annotate(first, (i, layers[i].metrics.sqnr_db), fontsize=7, color="red", rotation=20)
    rel = ax.twinx()
    rel.semilogy(x, [max(layer.metrics.max_rel, 1e-12) for layer in layers], color="orange", linewidth=0.8)
    rel.set_ylabel("max_rel", color="orange")
    ax.set_title(f"{Path(report.artifact).name}: error along depth")
    ax.legend(fontsize=7, loc="lower left")
    return png_base64(fig)


def to_html(report: DebugReport) -> str:
    """A self-contained page: nothing it shows is fetched from anywhere."""
    e = html.escape
    first = report.first_divergence
    rows = "".join(
        f"<tr{' class=bad' if layer.failures else ''}><td>{i}</td><td style='text-align:left'>{e(layer.module)}</td>"
        f"<td>{e(layer.kind)}</td><td>{e(layer.method)}</td><td>{layer.metrics.sqnr_db:.1f}</td>"
        f"<td>{layer.metrics.max_rel:.2e}</td><td>{layer.metrics.cosine_min:.6f}</td><td>{layer.sqnr_drop_db:+.1f}</td>"
        f"<td>{100 * layer.noise_added:.3g}</td></tr>"
        for i, layer in enumerate(report.layers))
    verdict = (f"first divergence: <code>{e(first)}</code>" if first
               else "no module departs from PyTorch beyond the tolerance")
    mapped = ", ".join(f"{k} {v}" for k, v in report.mapped.items())
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>mvdeploy debug</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}tr.bad{background:#fdd}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{e(Path(report.artifact).name)}</h1>",
        f"<p>{e(report.model)}, {e(report.target)} {e(report.precision)}; engine: {e(report.engine)}; "
        f"reference: {e(report.reference)}; tolerance per layer: {e(json.dumps(report.tolerance.to_dict()))}</p>",
        f"<p><b>{verdict}</b></p><p>modules mapped: {e(mapped)}</p>",
        f"<img alt='error along depth' src='data:image/png;base64,{_plot(report) if report.layers else ''}'>",
        "<table><tr><th>#</th><th>module</th><th>kind</th><th>mapped by</th><th>SQNR dB</th><th>max_rel</th>"
        f"<th>cosine min</th><th>SQNR drop dB</th><th>noise added %</th></tr>{rows}</table>",
        "<p>" + "<br>".join(e(n) for n in report.notes) + "</p>",
        "</body></html>"])
