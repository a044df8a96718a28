"""`mvdeploy`: a thin Typer app. Each command parses, calls the library, renders, maps errors."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import MvDeployError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="MobileViT and Swin from PyTorch to phones, with proof of parity.")
console = Console()
if not console.is_terminal:            # piped or in CI: wide enough that tables do not wrap numbers
    console = Console(width=160)
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160)

WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help=".safetensors or a PyTorch state dict")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="real images for parity: a folder or ImageFolder tree")]
WeightsFormatOpt = Annotated[Optional[str], typer.Option(
    "--weights-format", help="who named the --weights tensors: hf | timm | torchvision [default: detected]")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="rebuild the head for K classes")]


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _parity_row(table: Table, name: str, precision: str, size: int, report, seconds: float | None) -> None:
    if report is None:
        table.add_row(name, precision, _fmt_bytes(size), "-", "-", "-", "-", "not checked",
                      f"{seconds:.1f}" if seconds is not None else "-")
        return
    m = report.metrics
    status = "[green]pass[/]" if report.passed else "[red]FAIL[/]"
    cells = ("-",) * 4 if m is None else (f"{m.max_abs:.2e}", f"{m.max_rel:.2e}", f"{m.cosine_min:.6f}", f"{m.sqnr_db:.1f}")
    table.add_row(name, precision, _fmt_bytes(size), *cells, status, f"{seconds:.1f}" if seconds is not None else "-")


def _parity_table() -> Table:
    table = Table(title="conversion and parity")
    for col in ("artifact", "precision", "size", "max abs", "max rel", "cosine min", "SQNR dB", "parity", "convert s"):
        table.add_column(col)
    return table


def _print_failures(report) -> None:
    if report is not None and not report.passed:
        for line in report.failures:
            err_console.print(f"  [red]{_shown(Path(report.artifact).name)}[/]: {_escape(line)}", highlight=False)


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List the models: parameters, MACs at the default size, default input size."""
    from .modelinfo import count_macs, count_parameters
    from .models import MODELS, create_model

    rows = []
    for name, config in MODELS.items():
        model = create_model(name)
        rows.append({"name": name, "family": config.family, "parameters": count_parameters(model),
                     "macs": count_macs(model, config.default_image_size),
                     "image_size": config.default_image_size})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="models (1000 classes)")
    for col in ("name", "family", "parameters", "MACs", "input"):
        table.add_column(col, justify="right" if col in ("parameters", "MACs") else "left")
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['parameters'] / 1e6:.3f} M", f"{r['macs'] / 1e9:.3f} G",
                      f"{r['image_size']}x{r['image_size']}")
    console.print(table)


def _precisions(text: str):
    from .errors import InvalidValueError
    from .spec import Precision, parse_choice

    chosen = [parse_choice(Precision, item, "precision") for item in (p.strip() for p in text.split(",")) if item]
    if not chosen:
        raise InvalidValueError(f"no precision given in {text!r} (known: {', '.join(p.value for p in Precision)})")
    return list(dict.fromkeys(chosen))


def _target_options(target, ios: int | None, image_input: bool, labels_file: Path | None, prepared):
    """The target's typed Options from the flags the user actually gave; a flag the target does not
    take is an OptionsError naming the target (e.g. --ios on tflite)."""
    given = {"ios": ios, "image_input": True if image_input else None,
             "labels": tuple(prepared.class_names(labels_file)) if labels_file is not None else None}
    return target.options(**{k: v for k, v in given.items() if v is not None})


@app.command()
def convert(
    model: Annotated[str, typer.Argument(help="model name (see `mvdeploy models`)")] = "mobilevit_xxs",
    target: Annotated[str, typer.Option("--target", help="onnx, tflite, coreml or executorch")] = "tflite",
    precision: Annotated[str, typer.Option("--precision", help="one or more, comma-separated: fp32,fp16,int8,...")] = "fp32",
    weights: WeightsOpt = None,
    weights_format: WeightsFormatOpt = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="square input side")] = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="int8 calibration images: a folder, or 'synthetic'")] = None,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="calibration images to use")] = 200,
    converter: Annotated[Optional[str], typer.Option("--converter", help="tflite: litert-torch or onnx2tf; coreml: trace or export")] = None,
    layout: Annotated[str, typer.Option("--layout", help="input layout: nchw or nhwc")] = "nchw",
    int8_io: Annotated[bool, typer.Option("--int8-io", help="tflite int8: integer input and output")] = False,
    ios: Annotated[Optional[int], typer.Option("--ios", help="coreml: minimum iOS (16, 17, 18) [default: 17]")] = None,
    image_input: Annotated[bool, typer.Option("--image-input", help="coreml: an image input with scale and mean/std inside")] = False,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="coreml: class labels file, makes a classifier")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder [default: mvdeploy-out/<model>]")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="skip the parity check")] = False,
    no_fuse: Annotated[bool, typer.Option("--no-fuse", help="export the unfused model")] = False,
) -> None:
    """Convert a model for a target, check parity against PyTorch, write <model>-<precision><suffix>."""
    from . import pipeline
    from .calibration import calibration_for
    from .errors import at_least
    from .outputs import check_folder
    from .spec import Layout, parse_choice
    from .targets import get_target

    chosen = get_target(target)
    precisions = _precisions(precision)
    layout_value = parse_choice(Layout, layout, "layout")
    at_least(calib_samples, 1, "--calib-samples")
    out_dir = out or Path("mvdeploy-out") / model
    check_folder(out_dir)
    prepared = pipeline.prepare_model(model, weights, num_classes, image_size, weights_format=weights_format)
    options = _target_options(chosen, ios, image_input, labels, prepared)
    specs = [chosen.check(prepared.spec(p, layout=layout_value, int8_io=int8_io, converter=converter,
                                        options=options), will_calibrate=True) for p in precisions]
    calibration = None
    if any(chosen.needs_calibration(p) for p in precisions):
        calibration = calibration_for(prepared, calib_data, samples=calib_samples, progress=True)
    inputs = None if no_check else pipeline.parity_inputs(prepared, data, progress=True, calibration=calibration)
    table = _parity_table()
    failed = []
    for spec in specs:
        p = spec.precision
        with console.status(f"converting {model} to {target} {p.value}..."):
            result = pipeline.convert(prepared, chosen, spec, out_dir, do_fuse=not no_fuse, check=not no_check,
                                      inputs=inputs, calibration=calibration)
        _parity_row(table, _shown(Path(result.artifact.path).name), p.value, result.artifact.size_bytes,
                    result.report, result.seconds)
        if result.report is not None and not result.report.passed:
            failed.append(result.report)
    console.print(table)
    console.print(f"weights: {prepared.weights}; parity on {inputs.summary() if inputs else 'nothing (--no-check)'}",
                  highlight=False)
    for note in prepared.notes:
        console.print(f"weights: {note}", highlight=False)
    if calibration is not None:
        console.print(f"calibration: {calibration.samples} images from {calibration.source}"
                      + (f" ({calibration.skipped} unreadable files skipped)" if calibration.skipped else ""),
                      highlight=False)
    if not prepared.trained:
        console.print("[yellow]weights are random[/]: parity on random weights is a weak test; pass --weights and --data")
    for report in failed:
        _print_failures(report)
        err_console.print(f"  failed parity: kept for inspection as {_shown(report.artifact)}; "
                          "a file already in --out was left as it was", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def check(
    artifact: Annotated[Path, typer.Argument(help="an exported file (.onnx, .tflite, .mlpackage, .pte)")],
    model: Annotated[Optional[str], typer.Option("--model", help="the PyTorch model it should match (not needed with --golden)")] = None,
    weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
    save_golden: Annotated[Optional[Path], typer.Option("--save-golden", help="also write the inputs and this file's outputs to DIR")] = None,
    golden: Annotated[Optional[Path], typer.Option("--golden", help="check against outputs saved with --save-golden, without PyTorch")] = None,
) -> None:
    """Check any artifact (also one mvdeploy did not make) against the PyTorch model, or against golden outputs."""
    from .errors import InvalidValueError
    from .parity import parity_path

    if golden is not None:
        from .golden import check_golden

        if save_golden is not None:
            raise InvalidValueError("--golden and --save-golden do not go together: check first, then save")
        report = check_golden(artifact, golden)
        table = _parity_table()
        _parity_row(table, _shown(artifact.name), report.precision, _artifact_size(artifact), report, None)
        console.print(table)
        console.print(f"engine: {report.engine}; against {report.reference}; {'; '.join(report.notes)}", highlight=False)
        _print_failures(report)
        if not report.passed:
            raise typer.Exit(1)
        return
    if model is None:
        raise InvalidValueError("pass --model NAME (the PyTorch model the file should match), or --golden DIR")
    from .pipeline import check_file

    if save_golden is not None:
        from .outputs import check_folder
        check_folder(save_golden, "--save-golden")
    loaded, report = check_file(artifact, model, weights, num_classes, data, progress=True)
    table = _parity_table()
    _parity_row(table, _shown(artifact.name), loaded.precision.value, loaded.size_bytes, report, None)
    console.print(table)
    console.print(f"engine: {report.engine}; report: {_shown(parity_path(artifact))}", highlight=False)
    _print_failures(report)
    if not report.passed:
        if save_golden is not None:
            err_console.print("  no golden outputs saved: the file failed its check", highlight=False)
        raise typer.Exit(1)
    if save_golden is not None:
        from .golden import save_golden as write_golden

        folder = write_golden(artifact, save_golden, model, weights, num_classes, data)
        console.print(f"golden inputs and outputs: {_shown(folder)}", highlight=False)


def _artifact_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


@app.command()
def debug(
    artifact: Annotated[Path, typer.Argument(help="an exported file (.onnx, .tflite, .mlpackage, .pte)")],
    model: Annotated[str, typer.Option("--model", help="the PyTorch model it should match")],
    weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
) -> None:
    """Find the first layer where a file departs from PyTorch: every module's output, side by side."""
    from .debug.report import debug_paths
    from .debug.run import debug_file

    with console.status(f"running {artifact.name} and {model} layer by layer..."):
        report = debug_file(artifact, model, weights, num_classes, data)
    table = Table(title=f"{_shown(artifact.name)} against {model}, layer by layer")
    for col in ("#", "module", "kind", "mapped by", "SQNR dB", "max rel", "cosine min", "SQNR drop dB"):
        table.add_column(col, justify="left" if col in ("module", "kind", "mapped by") else "right")
    first = report.first_divergence
    for i, layer in enumerate(report.layers):
        style = "red" if layer.module == first else ("yellow" if layer.failures else None)
        m = layer.metrics
        table.add_row(str(i), layer.module, layer.kind, layer.method, f"{m.sqnr_db:.1f}", f"{m.max_rel:.2e}",
                      f"{m.cosine_min:.6f}", f"{layer.sqnr_drop_db:+.1f}", style=style)
    console.print(table)
    counts = report.mapped
    console.print(f"modules mapped: {counts['name']} by name, {counts['matched']} by op kind, shape and order, "
                  f"{counts['unmapped']} unmapped; engine: {report.engine}", highlight=False)
    if report.precision != "fp32":
        worst = ", ".join(f"{r.module} (+{100 * r.noise_added:.2g}% noise power)" for r in report.ranking(5))
        console.print(f"layers adding the most noise: {worst}", highlight=False)
    json_path, html_path = debug_paths(artifact)
    if first is None:
        console.print(f"[green]no module departs from PyTorch beyond the {report.target} {report.precision} tolerance[/]")
    else:
        layer = next(l for l in report.layers if l.module == first)
        console.print(f"[red]first divergence[/]: {_escape(first)} ({_escape('; '.join(layer.failures))})", highlight=False)
    console.print(f"written: {_shown(json_path)}, {_shown(html_path)}", highlight=False)


@app.command()
def bundle(
    model: Annotated[str, typer.Argument(help="model name")] = "mobilevit_xxs",
    platform: Annotated[str, typer.Option("--platform", help="ios or android")] = "android",
    runtime: Annotated[Optional[str], typer.Option(
        "--runtime", help="on-device runtime: coreml (ios), tflite = LiteRT (android, default) or executorch (android)")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="default: fp16 for ios, fp32 for android")] = None,
    weights: WeightsOpt = None,
    weights_format: WeightsFormatOpt = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="square input side")] = None,
    num_classes: NumClassesOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="class labels, one per line")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="evaluation images for golden cases and parity")] = None,
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="int8 calibration: a folder, or 'synthetic'")] = None,
    artifact: Annotated[Optional[Path], typer.Option("--artifact", help="bundle this file instead of converting")] = None,
    golden: Annotated[int, typer.Option("--golden", help="golden self-test cases")] = 4,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("mvdeploy-out/bundles"),
) -> None:
    """Write an app bundle (model, labels, bundle.json, golden self-test, sample app) and its zip."""
    from apps.bundle import build_bundle, get_platform, golden_cases
    from . import pipeline
    from .calibration import calibration_for
    from .errors import ArtifactError, TargetUnavailableError, at_least
    from .outputs import check_folder
    from .targets import get_target

    at_least(golden, 1, "--golden")
    check_folder(out)
    plat = get_platform(platform, runtime)
    chosen = _precisions(precision)[0] if precision else plat.default_precision
    if artifact is not None and not artifact.exists():
        raise ArtifactError(f"artifact {artifact} does not exist")
    reason = get_target(plat.target).unavailable_reason()
    if reason:
        raise TargetUnavailableError(reason)
    prepared = pipeline.prepare_model(model, weights, num_classes, image_size, weights_format=weights_format)
    class_names = prepared.class_names(labels)
    parity = pipeline.parity_inputs(prepared, data, progress=True)
    golden_inputs, golden_labels = golden_cases(prepared, data, golden)
    calibration = None
    if get_target(plat.target).needs_calibration(chosen):
        calibration = calibration_for(prepared, calib_data, progress=True)
    with console.status(f"bundling {model} for {platform}..."):
        result = build_bundle(prepared, platform, out, golden_inputs, golden_labels, class_names, chosen,
                              artifact, calibration, parity, runtime=plat.runtime)
    m = result.manifest
    table = Table(title=f"bundle {result.folder.name}")
    for col in ("file", "input", "layout", "output", "golden", "parity"):
        table.add_column(col)
    table.add_row(m["model"]["file"], str(m["input"]["shape"]), m["input"]["layout"], str(m["output"]["shape"]),
                  f"{len(m['golden']['cases'])} from {m['golden']['source']}",
                  "[green]pass[/]" if m["parity"]["passed"] else "[red]FAIL[/]")
    console.print(table)
    console.print(f"folder: {result.folder}\nzip:    {result.zip_path}", highlight=False)


@app.command()
def verify(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help="a bundle folder or its .zip")],
    device_outputs: Annotated[Optional[Path], typer.Option(
        "--device-outputs", metavar="FILE.json",
        help="the logits an app produced for the golden images (the sample apps' self-test writes "
             "device_outputs.json); on disagreement, names the preprocessing mistake that explains them")] = None,
) -> None:
    """Check a bundle: schema, checksums, safe zip paths, golden self-test on this machine; an app's outputs."""
    from apps.diagnose import read_device_outputs
    from apps.verify import verify as run_verify

    device = read_device_outputs(device_outputs) if device_outputs is not None else None
    result = run_verify(bundle_path, device)
    for line in result.checked:
        console.print(f"[green]ok[/]   {line}", highlight=False)
    for line in result.failures:
        err_console.print(f"[red]FAIL[/] {_escape(line)}", highlight=False, soft_wrap=True)
    if result.device is not None:
        for line in result.device.details():
            err_console.print(f"     {_escape(line)}", highlight=False, soft_wrap=True)
    if not result.passed:
        raise typer.Exit(1)
    console.print(f"bundle {bundle_path} verified")


@app.command()
def report(
    models_arg: Annotated[str, typer.Argument(metavar="[MODELS]", help="comma-separated model names")] = "mobilevit_xxs,swin_micro",
    targets: Annotated[str, typer.Option("--targets", help="comma-separated: tflite, coreml, onnx, executorch")] = "tflite,coreml",
    precisions: Annotated[str, typer.Option("--precisions", help="comma-separated; each target takes those it supports")] = "fp32,fp16,int8,palettize6,palettize4",
    weights: WeightsOpt = None,
    weights_format: WeightsFormatOpt = None,
    eval_data: Annotated[Optional[Path], typer.Option("--eval-data", help="ImageFolder tree with labels")] = None,
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="calibration folder (disjoint from --eval-data) or 'synthetic'")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", help="at most this many evaluation images")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="timed runs per variant")] = 30,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("mvdeploy-out/report"),
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="convert again even where a checked artifact exists")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", help="run cells and evaluation shards as Ray tasks on a local Ray of N workers started for this run")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", envvar="RAY_ADDRESS", help="run them on a running Ray cluster: its head's HOST:PORT", show_envvar=True)] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="evaluation images per task")] = 256,
    artifact_store: Annotated[Optional[Path], typer.Option("--artifact-store", help="a folder the Ray workers and this machine all reach; files travel through it instead of as bytes")] = None,
) -> None:
    """Size, latency, accuracy and per-layer int8 error of every (target, precision), as JSON, Markdown and HTML.

    In this process by default; with --workers N or --ray-address, conversions and evaluation shards run as Ray tasks (the same figures), and latency is still timed here, one variant at a time."""
    import shlex
    import sys

    from . import pipeline
    from .errors import InvalidValueError, TargetUnavailableError, at_least
    from .outputs import check_folder, ensure_folder
    from .quantization.report import Report, measure_models
    from .reports import HEADLINE, headline_rows, write_report
    from .scale import executor_for
    from .targets import get_target
    from .versions import tool_versions

    names = [n.strip() for n in models_arg.split(",") if n.strip()]
    target_names = list(dict.fromkeys(t.strip() for t in targets.split(",") if t.strip()))
    at_least(eval_limit, 1, "--eval-limit")
    at_least(repeats, 1, "--repeats")
    at_least(workers, 1, "--workers")
    at_least(shard_size, 1, "--shard-size")
    if workers is not None and ray_address:
        raise InvalidValueError("--workers N starts a local Ray for this run and --ray-address (or RAY_ADDRESS) "
                                "uses a running cluster: pass one of them")
    if artifact_store is not None:
        if workers is None and not ray_address:
            raise InvalidValueError("--artifact-store is where Ray workers put the files they convert: "
                                    "pass it with --workers N or --ray-address")
        check_folder(artifact_store, "--artifact-store")
    if not names or not target_names:
        raise InvalidValueError("nothing to report: name at least one model and one target")
    check_folder(out)
    for name in target_names:
        reason = get_target(name).unavailable_reason()
        if reason:
            raise TargetUnavailableError(reason)
    chosen = _precisions(precisions)
    pairs = [(t, p.value) for t in target_names for p in chosen if p in get_target(t).precisions]
    if not pairs:
        raise InvalidValueError(f"nothing to report: none of the targets {', '.join(target_names)} takes "
                                f"{', '.join(p.value for p in chosen)}")
    prepared = [pipeline.prepare_model(n, weights, weights_format=weights_format) for n in names]
    if artifact_store is not None:
        ensure_folder(artifact_store, "--artifact-store")
    executor = executor_for(workers, ray_address or None)
    ran_on = {**executor.describe(), "shard_size": shard_size,
              "artifact_store": str(artifact_store) if artifact_store is not None else None}
    with _report_progress() as (step, advance):
        step(f"starting {ran_on['description']}")
        with executor:
            results = measure_models([(p, out / "artifacts" / p.name) for p in prepared], target_names, chosen,
                                     eval_data=eval_data, calib_data=calib_data, eval_limit=eval_limit,
                                     repeats=repeats, reuse=not no_reuse, executor=executor, shard_size=shard_size,
                                     artifact_store=artifact_store, on_step=step, on_progress=advance)
    command = "mvdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    files = write_report(Report(command, tool_versions(), results, ran_on), out)
    table = Table(title="quantization report")
    for col in HEADLINE:
        table.add_column(col)
    for row in headline_rows(Report(command, {}, results)):
        table.add_row(*row)
    console.print(table)
    for m in results:
        for line in m.failures:
            err_console.print(f"[red]failed[/]: {m.model} {_escape(line)}", highlight=False, soft_wrap=True)
    failed = sum(len(m.failures) for m in results)
    if failed:
        err_console.print(f"{failed} of the report's cells failed; the others are measured above "
                          "(report.json: models[].failures)", highlight=False)
    console.print(f"ran on: {ran_on['description']}", highlight=False)
    from .reports import ship_lines
    for line in ship_lines(Report(command, {}, results)):
        console.print(f"[bold]what to ship[/] {line}", highlight=False)
    console.print("written: " + ", ".join(str(f) for f in files.values()), highlight=False)


@contextmanager
def _report_progress():
    """One bar over a report's tasks (cells, evaluation shards, timings) as they complete; it names the
    phase. Yields (step(text), advance(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("preparing", total=None)
        yield (lambda text: bar.update(task, description=text),
               lambda done, total: bar.update(task, completed=done, total=total))


@app.command()
def bench(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="exported files; the first is the baseline")],
    threads: Annotated[int, typer.Option("--threads", help="engine threads (LiteRT, onnxruntime)")] = 2,
    rounds: Annotated[int, typer.Option("--rounds", help="round-robin rounds over the files")] = 10,
    repeats: Annotated[int, typer.Option("--repeats", help="timed single-image runs per file per round")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Latency of exported files in one interleaved run: medians, spread and ratios to the first file."""
    from .bench import bench as run_bench
    from .progress import progress_bar

    with progress_bar("timing, interleaved", rounds * len(files), enabled=not as_json) as advance:
        rows = run_bench(files, threads, rounds, repeats, progress=lambda done, total: advance(1))
    if as_json:
        typer.echo(json.dumps({"threads": threads, "rounds": rounds, "repeats": repeats,
                               "files": [r.to_dict() for r in rows]}, indent=2))
        return
    table = Table(title=f"latency, single image, {threads} threads, {rounds} x {repeats} runs interleaved")
    for col in ("file", "target", "precision", "size", "median ms", "p10 / p90 ms", "x first"):
        table.add_column(col, justify="right" if col in ("size", "median ms", "p10 / p90 ms", "x first") else "left")
    for r in rows:
        timing = ("-", r.note or "-", "-") if r.median_ms is None else (
            f"{r.median_ms:.2f}", f"{r.p10_ms:.2f} / {r.p90_ms:.2f}", f"{r.ratio:.2f}")
        table.add_row(_shown(Path(r.file).name), r.target, r.precision, _fmt_bytes(r.size_bytes), *timing)
    console.print(table)
    console.print(f"engines: {'; '.join(dict.fromkeys(r.engine for r in rows))}", highlight=False)


def _verbose() -> bool:
    return os.environ.get("MVDEPLOY_VERBOSE", "") not in ("", "0")


@app.callback()
def _options(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="let libraries' warnings and logs through; full tracebacks")] = False) -> None:
    """MobileViT and Swin from PyTorch to phones, with proof of parity."""
    if verbose:
        os.environ["MVDEPLOY_VERBOSE"] = "1"


def main() -> None:
    """Entry point: library errors become one readable line and exit code 1; signals stop the run
    (exit 128+N) with its staging folders removed; nothing is left in the temporary folder."""
    import sys

    from .errors import first_line
    from .guard import Stopped, native_chatter_to, private_tempdir, quiet_libraries, stop_on_signals

    verbose = _verbose() or any(a in ("-v", "--verbose") for a in sys.argv[1:2])
    quiet_libraries(verbose)
    code = 0
    with private_tempdir() as scratch, native_chatter_to(scratch, verbose), stop_on_signals() as received:
        try:
            app()      # standalone: Typer/Click handle --help, usage errors (exit 2) and typer.Exit themselves
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except MvDeployError as e:
            code = 1
            err_console.print(f"[red]error:[/] {_escape(str(e) or type(e).__name__)}", highlight=False, soft_wrap=True)
        except Stopped as e:
            code = e.exit_code
            err_console.print(f"stopped by {e}: nothing was written", highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            code = 130
            err_console.print("interrupted: nothing was written", highlight=False, soft_wrap=True)
        except BrokenPipeError:                          # `mvdeploy models | head`: end quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 0
        except OSError as e:                             # the file system said no: one line, which path, why
            code = 1
            where = f": {_shown(e.filename)}" if e.filename else ""
            err_console.print(f"[red]error:[/] {_escape(e.strerror or first_line(e))}{where}", highlight=False,
                              soft_wrap=True)
        except Exception as e:                           # a bug of ours: still one line, the traceback on -v
            code = 1
            if verbose:
                raise
            err_console.print(f"[red]error:[/] unexpected {type(e).__name__}: {_escape(first_line(e))} "
                              "(a bug in mvdeploy; run with --verbose for the traceback)", highlight=False, soft_wrap=True)
        if received and code == 0:                      # a library swallowed the stop: it is still a stop
            code = 128 + received[0]
    try:
        sys.stdout.flush()
    except BrokenPipeError:                              # the reader went away: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(code)


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def _shown(path) -> str:
    """A path as text that any terminal can print (undecodable bytes shown as U+FFFD)."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


if __name__ == "__main__":
    main()
