"""An accuracy budget for int8 (`--max-accuracy-drop PT`): convert, measure top-1 against PyTorch fp32 on
evaluation images calibration did not use, and while the drop is over the budget keep the next noisiest
layer in float and convert again.

"Noisiest" is the converted file's own ranking: `debug.run.debug_artifact`, the per-layer engine of
`mvdeploy debug` (the noise power each mapped module adds against PyTorch), over the layers a float
fallback can take (a conv or linear the quantizer annotates). Every step converts through the one
convert sequence (`pipeline.convert_all`) into a staging folder inside the output folder; only a step
within budget is moved into place, with its parity report and <artifact>.budget.json / .budget.html (the
steps: accuracy, latency against the first step (`bench`: every step's file in one interleaved run), size,
kept layers, and a plot). A budget that cannot be met is one `BudgetError` line naming the best step, and
nothing is written.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..calibration import DEFAULT_SAMPLES, calibration_for, require_disjoint
from ..errors import BudgetError, ConversionError, DataError, InvalidValueError
from ..outputs import ensure_folder, move_into_place, staging, write_text_atomic
from ..parity import parity_path
from ..spec import ExportSpec
from .fallback import FALLBACK_KINDS

DEFAULT_STEPS = 4            # layers kept float beyond the ones asked for, at most
RANKED = 5                   # each step records the file's noisiest layers, this many


@dataclass
class BudgetStep:
    keep_float: list[str]         # the modules this step's file computes in float
    accuracy: float               # top-1 of the file on the evaluation images
    drop: float                   # PyTorch fp32 top-1 minus the file's, in points
    latency_ms: float | None = None     # median single-image latency here (`bench`: every step's file timed
                                        # in one interleaved run at the end; None: its engine's timings say nothing)
    latency_ratio: float | None = None  # latency / the first step's
    size_bytes: int = 0
    noisiest: list[dict] = field(default_factory=list)   # the file's ranking: [{"module", "kind", "noise_added"}]


@dataclass
class BudgetRun:
    max_drop: float               # points
    reference_accuracy: float     # PyTorch fp32 top-1 on the evaluation images
    images: int
    source: str                   # where the evaluation images came from
    host: str                     # the CPU the latencies were timed on
    steps: list[BudgetStep] = field(default_factory=list)
    timing: str = ""              # bench's control line: whether the machine was disturbed while timing

    @property
    def met(self) -> bool:
        return bool(self.steps) and self.steps[-1].drop <= self.max_drop

    def best(self) -> BudgetStep:
        return min(self.steps, key=lambda s: s.drop)

    def line(self) -> str:
        """One line: the budget met (and how), or why not and the best step reached."""
        if self.met:
            last = self.steps[-1]
            return (f"accuracy budget met: top-1 {100 * last.accuracy:.2f}% ({last.drop:.2f} points below fp32 "
                    f"{100 * self.reference_accuracy:.2f}%, budget {self.max_drop:g}) keeping in float: "
                    f"{', '.join(last.keep_float) or 'nothing'}")
        best = self.best()
        return (f"the accuracy budget of {self.max_drop:g} points cannot be met in {_steps(len(self.steps))}: the best "
                f"step lost {best.drop:.2f} points (top-1 {100 * best.accuracy:.2f}% vs fp32 "
                f"{100 * self.reference_accuracy:.2f}%) keeping in float: {', '.join(best.keep_float) or 'nothing'}")

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "reference_accuracy": self.reference_accuracy, "images": self.images,
                "source": self.source, "host": self.host, "timing": self.timing, "met": self.met, "line": self.line(),
                "steps": [asdict(s) for s in self.steps]}


@dataclass(frozen=True)
class AccuracyBudget:
    """What `pipeline.convert_model(budget=...)` runs instead of the plain sequence."""

    max_drop: float                       # points of top-1 the int8 file may lose against PyTorch fp32
    eval_data: Path | None = None         # an ImageFolder tree; None: the reference checkpoint's test split
    eval_images: int | None = None        # how many of them (None: all)
    steps: int = DEFAULT_STEPS

    def convert(self, prepared, target, specs: Sequence[ExportSpec], out_dir: Path, *, calib_data=None,
                calib_samples: int = DEFAULT_SAMPLES, **sequence):
        """The budget loop for one int8 spec (see the module docstring); -> a pipeline.Conversion whose
        `budget` is the BudgetRun."""
        from ..pipeline import Conversion, convert_all, parity_inputs

        spec = self._validate(prepared, target, specs, calib_data)
        evaluation = _evaluation(prepared, self.eval_data, self.eval_images)
        reference_accuracy = _reference_accuracy(prepared, evaluation)
        calibration = sequence.pop("calibration", None) or calibration_for(
            prepared, calib_data, samples=calib_samples, progress=sequence.get("progress", False))
        inputs = sequence.pop("inputs", None)
        if inputs is None and sequence.get("check", True):
            inputs = parity_inputs(prepared, sequence.get("data"), calibration=calibration)
        run = BudgetRun(self.max_drop, reference_accuracy, len(evaluation.images), evaluation.source, _host())
        out_dir = Path(out_dir)
        created = ensure_folder(out_dir)
        try:
            with staging(out_dir) as tmp:
                files = []
                for step in range(self.steps + 1):
                    result = convert_all(prepared, target, [spec], Path(tmp) / f"step{step}", calibration=calibration,
                                         inputs=inputs, **sequence).results[0]
                    files.append(Path(result.artifact.path))
                    run.steps.append(_measure(target, prepared, result.artifact, evaluation, run, sequence.get("data")))
                    if run.met:
                        break
                    nxt = _next_layer(run.steps[-1], spec.keep_float)
                    if nxt is None or step == self.steps:
                        raise BudgetError(run.line())
                    spec = target.validate(_keeping(spec, nxt))
                _time_steps(run, files)
                result = _into_place(result, run, out_dir)
        except BaseException:
            if created and not any(out_dir.iterdir()):
                out_dir.rmdir()
            raise
        return Conversion(prepared, [result], calibration, inputs, budget=run)

    def _validate(self, prepared, target, specs, calib_data) -> ExportSpec:
        """Everything refused before any work: the budget, one int8 precision the target can keep float
        at, trained weights, evaluation images with labels, disjoint from calibration's."""
        if not 0 <= self.max_drop < 100:
            raise InvalidValueError(f"--max-accuracy-drop is in points of top-1 (0 to 100); got {self.max_drop:g}")
        if self.steps < 0:
            raise InvalidValueError(f"--budget-steps must be 0 or more; got {self.steps}")
        if len(specs) != 1 or specs[0].precision not in target.float_fallback:
            can = ", ".join(p.value for p in target.float_fallback) or "none"
            raise ConversionError(f"--max-accuracy-drop steers one int8 conversion; {target.name} keeps layers "
                                  f"float at: {can} (asked for {', '.join(s.precision.value for s in specs)})")
        if target.intermediates is None:
            raise ConversionError(f"--max-accuracy-drop ranks layers by the file's own per-layer noise, and "
                                  f"{target.name}'s engine does not expose a file's intermediate tensors: use "
                                  "--keep-float MODULE (the report's per-layer table of another target can guide it)")
        if not prepared.trained:
            raise InvalidValueError("--max-accuracy-drop measures accuracy: it needs trained weights (--weights FILE)")
        if self.eval_data is None and prepared.reference is None:
            raise DataError("--max-accuracy-drop measures top-1 on evaluation images calibration did not use: "
                            "pass --eval-data DIR (an ImageFolder tree, one folder per class)")
        require_disjoint(calib_data, self.eval_data)
        return specs[0]


def budget_for(max_drop: float | None, eval_data: Path | None = None,
               steps: int = DEFAULT_STEPS) -> AccuracyBudget | None:
    """The CLI's flags as a budget: None without --max-accuracy-drop (--eval-data alone is refused)."""
    if max_drop is None:
        if eval_data is not None:
            raise InvalidValueError("--eval-data is what --max-accuracy-drop measures on: pass both, or neither")
        return None
    return AccuracyBudget(max_drop, Path(eval_data) if eval_data is not None else None, steps=steps)


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


@dataclass(frozen=True, eq=False)
class _Evaluation:
    """The budget's evaluation images, decoded (a budget measures one file per step on all of them)."""

    images: np.ndarray               # [N, 3, H, W] float32
    labels: np.ndarray               # [N] int64
    source: str


def _evaluation(prepared, eval_data: Path | None, limit: int | None) -> _Evaluation:
    from .evaluate import evaluation_set

    chosen = evaluation_set(prepared, eval_data, limit)
    loaded = chosen.images.read(prepared.preprocess)
    if len(loaded.labels) == 0 or bool((loaded.labels < 0).any()):
        raise DataError(f"--max-accuracy-drop needs labelled evaluation images; {chosen.source} has none "
                        "(an ImageFolder tree: one folder per class, or a path,label listing)")
    skipped = f" ({len(loaded.unreadable)} unreadable, skipped: {loaded.unreadable[0]}, ...)" if loaded.unreadable else ""
    return _Evaluation(loaded.images, loaded.labels, chosen.source + skipped)


def _reference_accuracy(prepared, evaluation) -> float:
    from ..runners.torch import TorchRunner
    from .evaluate import accuracy

    with TorchRunner(prepared.model, input_shape=prepared.input_shape) as runner:
        return float(accuracy(runner.infer(evaluation.images), evaluation.labels))


def _host() -> str:
    from ..host import host

    return host().describe()


def _measure(target, prepared, artifact, evaluation, run: BudgetRun, data) -> BudgetStep:
    """One step's file: top-1, size, and its own noise ranking (latency: `_time_steps`, at the end)."""
    from ..debug.run import debug_artifact
    from .evaluate import accuracy

    with target.runner(artifact) as runner:
        top1 = float(accuracy(runner.infer(evaluation.images), evaluation.labels))
    ranking = debug_artifact(target, artifact, prepared, data).ranking(top=10 ** 6)
    return BudgetStep(list(artifact.keep_float), top1, 100 * (run.reference_accuracy - top1),
                      size_bytes=artifact.size_bytes,
                      noisiest=[{"module": r.module, "kind": r.kind, "noise_added": r.noise_added}
                                for r in ranking if r.kind in FALLBACK_KINDS and r.module not in artifact.keep_float])


def _time_steps(run: BudgetRun, files: list[Path]) -> None:
    """Every step's file timed against the first in one interleaved run (`bench`: engines warmed up,
    round-robin, with its control saying whether the machine was disturbed meanwhile)."""
    from ..bench import bench

    timed = bench(files)
    for step, row in zip(run.steps, timed.rows):
        step.latency_ms, step.latency_ratio = row.median_ms, row.ratio
    run.timing = timed.control.describe() if timed.control is not None else "no latency on this engine"


def _next_layer(step: BudgetStep, asked: Sequence[str]) -> str | None:
    """The noisiest layer of this step's file not yet kept float (nor inside one that is)."""
    kept = tuple(step.keep_float) + tuple(asked)
    for layer in step.noisiest:
        if not any(layer["module"] == k or layer["module"].startswith(k + ".") for k in kept):
            return layer["module"]
    return None


def _keeping(spec: ExportSpec, module: str) -> ExportSpec:
    """The same request with one more module kept float (a plain ExportSpec: the target validates it)."""
    fields = {name: getattr(spec, name) for name in ExportSpec.__dataclass_fields__}
    return ExportSpec(**{**fields, "keep_float": (*spec.keep_float, module)})


def _into_place(result, run: BudgetRun, out_dir: Path):
    """The step within budget, its parity report and the budget's pages, renamed into `out_dir` (a file
    that failed parity into <out_dir>/failed/, as the convert sequence does)."""
    staged = Path(result.artifact.path)
    final = out_dir / staged.relative_to(staged.parents[1] if staged.parent.name == "failed" else staged.parent)
    ensure_folder(final.parent)
    for step in run.steps:
        step.noisiest = step.noisiest[:RANKED]
    note = f"accuracy budget: {run.line()} (the steps: {final.name}.budget.json)"
    artifact = replace(result.artifact, path=final, notes=(*result.artifact.notes, note))
    json_path, html_path = budget_paths(final)
    write_text_atomic(json_path, _json(run))
    write_text_atomic(html_path, to_html(run, final.name))
    if result.report is not None:
        result.report.artifact = str(final)
        result.report.notes = [*result.report.notes, note]
        result.report.write(parity_path(staged))
        move_into_place(parity_path(staged), parity_path(final))
    move_into_place(staged, final)
    return replace(result, artifact=artifact)


def budget_paths(artifact: Path) -> tuple[Path, Path]:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".budget.json"), artifact.with_name(artifact.name + ".budget.html")


def _json(run: BudgetRun) -> str:
    import json

    return json.dumps(run.to_dict(), indent=2) + "\n"


def steps_table(run: BudgetRun) -> list[list[str]]:
    """The steps as rows: step, kept in float, top-1 %, drop (points), latency ratio, size MB."""
    return [[str(i), ", ".join(s.keep_float) or "-", f"{100 * s.accuracy:.2f}", f"{s.drop:+.2f}",
             "-" if s.latency_ratio is None else f"{s.latency_ratio:.2f}", f"{s.size_bytes / 1e6:.3f}"]
            for i, s in enumerate(run.steps)]


STEP_COLUMNS = ("step", "kept in float", "top-1 %", "drop (points)", "latency ratio", "size MB")


def to_html(run: BudgetRun, name: str) -> str:
    """A self-contained page: the steps table and the plot of accuracy against latency."""
    import html

    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in STEP_COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in steps_table(run))
    plot = _plot(run)
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>mvdeploy accuracy budget</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
        f"<h1>{e(name)}: accuracy budget</h1><p><b>{e(run.line())}</b></p>",
        f"<p>{run.images} evaluation images ({e(run.source)}); latency on {e(run.host)}, against the first step; "
        f"{e(run.timing)}</p>",
        f"<table><tr>{head}</tr>{rows}</table>",
        f"<img alt='accuracy against latency per step' src='data:image/png;base64,{plot}'>" if plot else "",
        "</body></html>"])


def _plot(run: BudgetRun) -> str:
    """Accuracy against latency ratio, one point per step, labelled by step; '' without latencies."""
    from ..figures import png_base64, pyplot

    points = [(s.latency_ratio, 100 * s.accuracy) for s in run.steps if s.latency_ratio is not None]
    if not points:
        return ""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    ax.plot(*zip(*points), marker="o")
    for i, (x, y) in enumerate(points):
        ax.annotate(f"step {i}", (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axhline(100 * run.reference_accuracy - run.max_drop, linestyle=":", color="gray", label="budget")
    ax.set_xlabel("latency / first step's")
    ax.set_ylabel("top-1 %")
    ax.legend(fontsize=8)
    return png_base64(fig, dpi=100)
