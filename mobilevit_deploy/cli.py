"""`mvdeploy`: a thin Typer app. Each command parses, calls the library, renders, maps errors."""
from __future__ import annotations

import enum
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from apps.bundle import BUNDLES_OUT, GOLDEN_CASES, PlatformName

from .bench import DEFAULT_PER_ROUND, DEFAULT_ROUNDS, DEFAULT_THREADS
from .calibration import DEFAULT_SAMPLES
from .errors import MvDeployError
from .quantization.budget import DEFAULT_STEPS
from .quantization.request import (DEFAULT_MODELS, DEFAULT_OUT, DEFAULT_PRECISIONS, DEFAULT_REPEATS,
                                   DEFAULT_SHARD_SIZE, DEFAULT_TARGETS, DEFAULT_FALLBACKS)
from .emulation import DEFAULT_PROFILE, PROFILES, Arch, arm_cpus
from .spec import Layout

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="MobileViT and Swin from PyTorch to phones, with proof of parity.")
console = Console()
if not console.is_terminal:            # piped or in CI: wide enough that tables do not wrap numbers
    console = Console(width=160)
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160)

WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help=".safetensors or a PyTorch state dict, or a Hugging Face save_pretrained folder (its model, "
                      "classes, labels and preprocessing are read from it)")]
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
    status = "[green]pass[/]" if report.passed else "[red]FAIL[/]"
    table.add_row(name, precision, _fmt_bytes(size), *_metric_cells(report.metrics.to_dict() if report.metrics else None),
                  status, f"{seconds:.1f}" if seconds is not None else "-")
    for row in report.arm64 or []:          # the same file on the engine's ARM64 build, one row per emulated CPU
        table.add_row(f"  on arm64 {row['profile']} (emulated)", precision, "", *_metric_cells(row["metrics"]),
                      "[red]FAIL[/]" if row["failures"] else "[green]pass[/]", "-")


def _metric_cells(m: dict | None) -> tuple[str, ...]:
    """max abs, max rel, cosine min, SQNR of a comparison (Metrics.to_dict), or dashes when nothing ran."""
    if m is None:
        return ("-",) * 4
    return f"{m['max_abs']:.2e}", f"{m['max_rel']:.2e}", f"{m['cosine_min']:.6f}", f"{m['sqnr_db']:.1f}"


def _parity_table() -> Table:
    table = Table(title="conversion and parity")
    for col in ("artifact", "precision", "size", "max abs", "max rel", "cosine min", "SQNR dB", "parity", "convert s"):
        table.add_column(col)
    return table


def _print_proof(report) -> None:
    if report is not None:
        for line in report.proof_lines():
            console.print(f"  {_shown(Path(report.artifact).name)}: {_escape(line)}", highlight=False, soft_wrap=True)
    if report is not None and not report.passed:
        for line in report.failures:
            err_console.print(f"  [red]{_shown(Path(report.artifact).name)}[/]: {_escape(line)}", highlight=False)


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List the models: parameters, MACs at the default size, default input size."""
    from .modelinfo import describe_models

    rows = describe_models()
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


@app.command()
def doctor() -> None:
    """What this install can do: each target and feature, usable or the one line that installs it."""
    from .doctor import capabilities, version_line

    rows = capabilities()
    table = Table(title=version_line())
    for col in ("name", "kind", "enables", "status", "install"):
        table.add_column(col)
    for row in rows:
        status = "[green]ready[/]" if row.ready else "[yellow]missing[/]"
        table.add_row(row.name, row.kind, row.enables, status, "" if row.ready else row.extra)
    console.print(table)
    for row in rows:
        if not row.ready:
            console.print(f"{row.name}: {_escape(row.missing)}", highlight=False, soft_wrap=True)


def _enum_option(flag: str, choices: type[enum.Enum], help: str):
    """An option taking one of an Enum's values: a wrong one is a usage error (exit 2) that still says
    'did you mean'."""
    def parse(value):
        from .errors import UnknownNameError
        from .spec import parse_choice

        if isinstance(value, choices):
            return value
        try:
            return parse_choice(choices, value, flag.lstrip("-"))
        except UnknownNameError as e:
            raise typer.BadParameter(str(e)) from None
    return typer.Option(flag, parser=parse, metavar=f"<{'|'.join(c.value for c in choices)}>", help=help)


ArchOpt = Annotated[Arch, _enum_option("--arch", Arch, "arm64: also on the engine's ARM64 build, on emulated phone CPUs "
                                                        "(tflite; numbers, never timing)")]
ArmCpuOpt = Annotated[str, typer.Option("--arm-cpu", help=f"with --arch arm64: emulated CPU profiles, comma-separated "
                                                           f"({', '.join(PROFILES)})")]


@contextmanager
def _steps():
    """Yields `step(text)` for a library's `on_step`: a spinner naming the step, started at the first
    one (after any progress bars of reading images are gone)."""
    status = console.status("")

    def step(text: str) -> None:
        status.update(text)
        status.start()
    try:
        yield step
    finally:
        status.stop()


@app.command()
def convert(
    model: Annotated[Optional[str], typer.Argument(
        help="model name (see `mvdeploy models`) [default: the one a Hugging Face --weights folder describes, "
             "else mobilevit_xxs]", show_default=False)] = None,
    target: Annotated[str, typer.Option("--target", help="onnx, tflite, coreml or executorch")] = "tflite",
    precision: Annotated[str, typer.Option("--precision", help="one or more, comma-separated: fp32,fp16,int8,...")] = "fp32",
    weights: WeightsOpt = None,
    weights_format: WeightsFormatOpt = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="square input side")] = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="int8 calibration images: a folder, or 'synthetic'")] = None,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="calibration images to use")] = DEFAULT_SAMPLES,
    converter: Annotated[Optional[str], typer.Option("--converter", help="tflite: litert-torch or onnx2tf; coreml: trace or export")] = None,
    layout: Annotated[Layout, _enum_option("--layout", Layout, "input layout")] = Layout.nchw,
    int8_io: Annotated[bool, typer.Option("--int8-io", help="tflite int8: integer input and output")] = False,
    keep_float: Annotated[Optional[str], typer.Option(
        "--keep-float", metavar="MODULE[,MODULE...]",
        help="tflite/executorch int8, coreml compressed: leave these modules in float "
             "(names as the report and debug give them)")] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option(
        "--max-accuracy-drop", metavar="PT", help="int8: keep the noisiest layers float, one per step, until top-1 is "
                                                  "within PT points of PyTorch fp32 (needs evaluation images)")] = None,
    eval_data: Annotated[Optional[Path], typer.Option(
        "--eval-data", help="with --max-accuracy-drop: labelled images (an ImageFolder tree or a path,label listing) calibration does not use "
                            "[default: the reference checkpoint's test split]")] = None,
    budget_steps: Annotated[int, typer.Option("--budget-steps", help="with --max-accuracy-drop: at most this many "
                                                                     "layers kept float")] = DEFAULT_STEPS,
    ios: Annotated[Optional[int], typer.Option("--ios", help="coreml: minimum iOS (16, 17, 18) [default: 17]")] = None,
    image_input: Annotated[bool, typer.Option("--image-input", help="coreml: an image input with scale and mean/std inside")] = False,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="coreml: class labels file, makes a classifier")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder [default: mvdeploy-out/<model>]")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="skip the parity check")] = False,
    no_fuse: Annotated[bool, typer.Option("--no-fuse", help="export the unfused model")] = False,
    arch: ArchOpt = Arch.host,
    arm_cpu: ArmCpuOpt = DEFAULT_PROFILE,
) -> None:
    """Convert a model for a target, check parity against PyTorch, write <model>-<precision><suffix>."""
    from .pipeline import convert_model
    from .quantization.budget import budget_for

    with _steps() as step:
        run = convert_model(model, target, precision, out, weights=weights, weights_format=weights_format,
                            image_size=image_size, num_classes=num_classes, layout=layout, int8_io=int8_io,
                            converter=converter, options={"ios": ios, "image_input": image_input or None},
                            labels_file=labels, calib_data=calib_data, calib_samples=calib_samples, data=data,
                            keep_float=keep_float, budget=budget_for(max_accuracy_drop, eval_data, budget_steps),
                            check=not no_check, do_fuse=not no_fuse, progress=True, on_step=step,
                            arm_cpus=arm_cpus(arch, arm_cpu))
    _show_conversion(run)
    if run.failed:
        raise typer.Exit(1)


def _show_budget(budget) -> None:
    """The accuracy budget's steps and its one line."""
    from .quantization.budget import STEP_COLUMNS, steps_table

    table = Table(title=f"accuracy budget: {budget.max_drop:g} points of top-1 on {budget.images} images")
    for col in STEP_COLUMNS:
        table.add_column(col)
    for row in steps_table(budget):
        table.add_row(*row)
    console.print(table)
    console.print(f"{_escape(budget.line())}; latency on {_escape(budget.host)}; {_escape(budget.timing)}",
                  highlight=False, soft_wrap=True)


def _show_conversion(run) -> None:
    """The parity table, which weights and images it ran on, and where each failed file was kept."""
    table = _parity_table()
    for result in run.results:
        _parity_row(table, _shown(Path(result.artifact.path).name), result.artifact.precision.value,
                    result.artifact.size_bytes, result.report, result.seconds)
    console.print(table)
    prepared, calibration = run.prepared, run.calibration
    console.print(f"weights: {prepared.weights}; parity on {run.inputs.summary() if run.inputs else 'nothing (--no-check)'}",
                  highlight=False)
    for note in prepared.notes:
        console.print(f"weights: {_escape(note)}", highlight=False, soft_wrap=True)
    if calibration is not None:
        console.print(f"calibration: {calibration.samples} images from {calibration.source}"
                      + (f" ({calibration.skipped} unreadable files skipped)" if calibration.skipped else ""),
                      highlight=False)
    if not prepared.trained:
        console.print("[yellow]weights are random[/]: parity on random weights is a weak test; pass --weights and --data")
    for result in run.results:
        _print_proof(result.report)
    if run.budget is not None:
        _show_budget(run.budget)
    for report in run.failed:
        err_console.print(f"  failed parity: kept for inspection as {_shown(report.artifact)}; "
                          "a file already in --out was left as it was", highlight=False, soft_wrap=True)


@app.command()
def check(
    artifact: Annotated[Path, typer.Argument(help="an exported file (.onnx, .tflite, .mlpackage, .pte)")],
    model: Annotated[Optional[str], typer.Option("--model", help="the PyTorch model it should match (not needed with --golden)")] = None,
    weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
    save_golden: Annotated[Optional[Path], typer.Option("--save-golden", help="also write the inputs and this file's outputs to DIR")] = None,
    golden: Annotated[Optional[Path], typer.Option("--golden", help="check against outputs saved with --save-golden, without PyTorch")] = None,
    arch: ArchOpt = Arch.host,
    arm_cpu: ArmCpuOpt = DEFAULT_PROFILE,
) -> None:
    """Check any artifact (also one mvdeploy did not make) against the PyTorch model, or against golden outputs."""
    from .golden import check_path

    checked = check_path(artifact, model, weights, num_classes, data, golden=golden, save_to=save_golden,
                         progress=True, arm_cpus=arm_cpus(arch, arm_cpu))
    report = checked.report
    table = _parity_table()
    _parity_row(table, _shown(artifact.name), report.precision, checked.size_bytes, report, None)
    console.print(table)
    against = (f"report: {_shown(checked.parity_json)}" if checked.parity_json is not None else
               f"against {report.reference}; {'; '.join(report.notes)}")
    console.print(f"engine: {report.engine}; {against}", highlight=False)
    _print_proof(report)
    if not report.passed:
        if save_golden is not None and golden is None:
            err_console.print("  no golden outputs saved: the file failed its check", highlight=False)
        raise typer.Exit(1)
    if checked.golden is not None:
        console.print(f"golden inputs and outputs: {_shown(checked.golden)}", highlight=False)


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
    console.print(_layers_table(report, f"{_shown(artifact.name)} against {model}, layer by layer"))
    counts = report.mapped
    console.print(f"modules mapped: {counts['name']} by name, {counts['matched']} by op kind, shape and order, "
                  f"{counts['unmapped']} unmapped; engine: {report.engine}", highlight=False)
    if report.precision != "fp32":
        worst = ", ".join(f"{r.module} (+{100 * r.noise_added:.2g}% noise power)" for r in report.ranking(5))
        console.print(f"layers adding the most noise: {worst}", highlight=False)
    json_path, html_path = debug_paths(artifact)
    first = report.first_divergence
    if first is None:
        console.print(f"[green]no module departs from PyTorch beyond the {report.target} {report.precision} tolerance[/]")
    else:
        layer = next(l for l in report.layers if l.module == first)
        console.print(f"[red]first divergence[/]: {_escape(first)} ({_escape('; '.join(layer.failures))})", highlight=False)
    console.print(f"written: {_shown(json_path)}, {_shown(html_path)}", highlight=False)


def _layers_table(report, title: str) -> Table:
    """Every module's output against PyTorch; the first divergence in red, other failures in yellow."""
    table = Table(title=title)
    for col in ("#", "module", "kind", "mapped by", "SQNR dB", "max rel", "cosine min", "SQNR drop dB"):
        table.add_column(col, justify="left" if col in ("module", "kind", "mapped by") else "right")
    for i, layer in enumerate(report.layers):
        style = "red" if layer.module == report.first_divergence else ("yellow" if layer.failures else None)
        m = layer.metrics
        table.add_row(str(i), layer.module, layer.kind, layer.method, f"{m.sqnr_db:.1f}", f"{m.max_rel:.2e}",
                      f"{m.cosine_min:.6f}", f"{layer.sqnr_drop_db:+.1f}", style=style)
    return table


@app.command()
def bundle(
    model: Annotated[Optional[str], typer.Argument(
        help="model name [default: the one a Hugging Face --weights folder describes, else mobilevit_xxs]",
        show_default=False)] = None,
    platform: Annotated[PlatformName, _enum_option("--platform", PlatformName, "ios or android")] = PlatformName.android,
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
    golden: Annotated[int, typer.Option("--golden", help="golden self-test cases")] = GOLDEN_CASES,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = BUNDLES_OUT,
) -> None:
    """Write an app bundle (model, labels, bundle.json, golden self-test, sample app) and its zip."""
    from apps.bundle import bundle_model

    with _steps() as step:
        result = bundle_model(model, platform, out, runtime=runtime, precision=precision, weights=weights,
                              weights_format=weights_format, image_size=image_size, num_classes=num_classes,
                              labels=labels, data=data, calib_data=calib_data, artifact=artifact, golden=golden,
                              progress=True, on_step=step)
    _show_bundle(result)


def _show_bundle(result) -> None:
    m = result.manifest
    table = Table(title=f"bundle {result.folder.name}")
    for col in ("file", "input", "layout", "output", "golden", "parity"):
        table.add_column(col)
    table.add_row(m["model"]["file"], str(m["input"]["shape"]), m["input"]["layout"], str(m["output"]["shape"]),
                  f"{len(m['golden']['cases'])} from {m['golden']['source']}",
                  "[green]pass[/]" if m["parity"]["passed"] else "[red]FAIL[/]")
    console.print(table)
    for note in m["model"]["weights_notes"]:
        console.print(f"weights: {_escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"folder: {result.folder}\nzip:    {result.zip_path}", highlight=False)


@app.command()
def verify(
    bundle_path: Annotated[Path, typer.Argument(metavar="BUNDLE", help="a bundle folder or its .zip")],
    device_outputs: Annotated[Optional[Path], typer.Option(
        "--device-outputs", metavar="FILE.json",
        help="the logits an app produced for the golden images (the sample apps' self-test writes "
             "device_outputs.json); on disagreement, names the preprocessing mistake that explains them")] = None,
    arch: ArchOpt = Arch.host,
    arm_cpu: ArmCpuOpt = DEFAULT_PROFILE,
) -> None:
    """Verify a bundle: schema, checksums, safe zip paths, golden self-test on this machine; an app's outputs."""
    from apps.diagnose import read_device_outputs
    from apps.verify import verify as run_verify

    device = read_device_outputs(device_outputs) if device_outputs is not None else None
    result = run_verify(bundle_path, device, arm_cpus(arch, arm_cpu))
    for line in result.verified:
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
    models_arg: Annotated[str, typer.Argument(metavar="[MODELS]", help="comma-separated model names")] = ",".join(DEFAULT_MODELS),
    targets: Annotated[str, typer.Option("--targets", help="comma-separated: tflite, coreml, onnx, executorch")] = ",".join(DEFAULT_TARGETS),
    precisions: Annotated[str, typer.Option("--precisions", help="comma-separated; each target takes those it supports")] = ",".join(DEFAULT_PRECISIONS),
    weights: WeightsOpt = None,
    weights_format: WeightsFormatOpt = None,
    eval_data: Annotated[Optional[Path], typer.Option("--eval-data", help="ImageFolder tree with labels, or a listing file of 'path,label' lines; every Ray node reads the images itself")] = None,
    calib_data: Annotated[Optional[str], typer.Option("--calib-data", help="calibration folder (disjoint from --eval-data) or 'synthetic'")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", help="at most this many evaluation images")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="timed runs per variant")] = DEFAULT_REPEATS,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = DEFAULT_OUT,
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="convert again even where a checked artifact exists")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", help="run cells and evaluation shards as Ray tasks on a local Ray of N workers started for this run")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", envvar="RAY_ADDRESS", help="run them on a running Ray cluster: its head's HOST:PORT", show_envvar=True)] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="evaluation images per task")] = DEFAULT_SHARD_SIZE,
    artifact_store: Annotated[Optional[Path], typer.Option("--artifact-store", help="a folder the Ray workers and this machine all reach; files travel through it instead of as bytes")] = None,
    arch: ArchOpt = Arch.host,
    arm_cpu: ArmCpuOpt = DEFAULT_PROFILE,
    fallbacks: Annotated[int, typer.Option("--fallbacks", help="per int8 file, convert again with each of its N noisiest layers kept float and measure top-1, latency and size (N more conversions per file)")] = DEFAULT_FALLBACKS,
) -> None:
    """Size, latency, accuracy and per-layer int8 error of every (target, precision), as JSON, Markdown and HTML.

    In this process by default; with --workers N or --ray-address, conversions and evaluation shards run as Ray tasks (the same figures), and latency is still timed here, one variant at a time. Exits 1 when a cell failed, after writing the report."""
    from .quantization.request import ReportRequest
    from .quantization.run import run_report

    request = ReportRequest(models_arg, targets, precisions, weights, weights_format, eval_data, calib_data,
                            eval_limit, repeats, out, not no_reuse, workers, ray_address or None, shard_size,
                            artifact_store, command=_command_line(), arm_cpus=arm_cpus(arch, arm_cpu),
                            fallbacks=fallbacks)
    with _report_progress() as (step, advance, images):
        done = run_report(request, on_step=step, on_progress=advance, on_images=images)
    _show_report(done)
    if done.failures:
        raise typer.Exit(1)


def _show_report(done) -> None:
    """The headline table, the failed cells, where it ran, what to ship, the files written."""
    from .reports import ARM64_HEADER, HEADLINE, arm64_rows, headline_rows, ship_lines

    for title, header, rows in (("quantization report", HEADLINE, headline_rows(done.report)),
                                ("parity on ARM64 (emulated CPUs, the parity images)", ARM64_HEADER,
                                 arm64_rows(done.report))):
        if rows:
            table = Table(title=title)
            for col in header:
                table.add_column(col)
            for row in rows:
                table.add_row(*row)
            console.print(table)
    for line in done.failures:
        err_console.print(f"[red]failed[/]: {_escape(line)}", highlight=False, soft_wrap=True)
    if done.failures:
        err_console.print(f"{len(done.failures)} of the report's cells failed; the others are measured above "
                          "(report.json: models[].failures)", highlight=False)
    console.print(f"ran on: {done.report.executor['description']}", highlight=False)
    for line in ship_lines(done.report):
        console.print(f"[bold]what to ship[/] {line}", highlight=False)
    console.print("written: " + ", ".join(_shown(f) for f in done.files.values()), highlight=False)


def _command_line() -> str:
    """This run's command line, as report.json records it."""
    import shlex
    import sys

    return "mvdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@contextmanager
def _report_progress():
    """A bar over a report's tasks (cells, evaluation shards, timings) as they complete, naming the phase, and
    one over the evaluated images with their rate and the time left; both appear at the first task (a run
    refused before any work prints only its error line). Yields (step(text), advance(done, total),
    images(done, total))."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err_console, transient=True)
    task = bar.add_task("preparing", total=None, rate="")
    images = bar.add_task("images evaluated", total=None, visible=False, rate="")

    def shown(which=task, **fields) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(which, **fields)

    def evaluated(done: int, total: int) -> None:
        shown(images, completed=done, total=total, visible=True)
        speed = next(t.speed for t in bar.tasks if t.id == images)
        shown(images, rate=f"{speed:,.0f} images/s" if speed else "")
    try:
        yield (lambda text: shown(description=text), lambda done, total: shown(completed=done, total=total),
               evaluated)
    finally:
        if bar.live.is_started:
            bar.stop()


@app.command()
def bench(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="exported files; the first is the baseline")],
    threads: Annotated[int, typer.Option("--threads", help="engine threads (LiteRT, onnxruntime)")] = DEFAULT_THREADS,
    rounds: Annotated[int, typer.Option("--rounds", help="round-robin rounds over the files")] = DEFAULT_ROUNDS,
    repeats: Annotated[int, typer.Option("--repeats", help="timed single-image runs per file per round")] = DEFAULT_PER_ROUND,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Latency of exported files in one interleaved run: medians, spread and ratios to the first file."""
    from .bench import bench as run_bench
    from .progress import progress_bar

    with progress_bar("timing, interleaved", rounds * len(files), enabled=not as_json) as advance:
        run = run_bench(files, threads, rounds, repeats, progress=lambda done, total: advance(1))
    if as_json:
        typer.echo(json.dumps({"rounds": rounds, "repeats": repeats, **run.to_dict()}, indent=2))
        return
    table = Table(title=f"latency, single image, {threads} threads, {rounds} x {repeats} runs interleaved")
    for col in ("file", "target", "precision", "size", "median ms", "p10 / p90 ms", "x first"):
        table.add_column(col, justify="right" if col in ("size", "median ms", "p10 / p90 ms", "x first") else "left")
    for r in run.rows:
        timing = ("-", r.note or "-", "-") if r.median_ms is None else (
            f"{r.median_ms:.2f}", f"{r.p10_ms:.2f} / {r.p90_ms:.2f}", f"{r.ratio:.2f}")
        table.add_row(_shown(Path(r.file).name), r.target, r.precision, _fmt_bytes(r.size_bytes), *timing)
    console.print(table)
    console.print(f"engines: {'; '.join(dict.fromkeys(r.engine for r in run.rows))}", highlight=False)
    console.print(f"host: {run.host.describe()}", highlight=False)
    if run.control is not None:
        console.print(("[yellow]" if run.control.disturbed else "") + _escape(run.control.describe()), highlight=False)


def _verbose() -> bool:
    return os.environ.get("MVDEPLOY_VERBOSE", "") not in ("", "0")


def _version(asked: bool) -> None:
    if asked:
        from .doctor import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _options(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="let libraries' warnings and logs through; full tracebacks")] = False,
             version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="print mvdeploy's version (and torch's) and exit")] = False) -> None:
    """MobileViT and Swin from PyTorch to phones, with proof of parity."""
    if verbose:
        os.environ["MVDEPLOY_VERBOSE"] = "1"


def main() -> None:
    """Entry point. The exit status follows one rule at every moment of the run: 0 when the command did
    what it was asked, 1 for an error (one line on stderr) or a failed check, 2 for a usage error, and
    128+N when signal N (SIGINT 130, SIGTERM 143) stopped the command before it was over, its staging
    folders removed. Once the command is over its status is decided: a signal while the process exits
    changes nothing. Nothing is left in the temporary folder."""
    import sys

    from .guard import Stopped, native_chatter_to, private_tempdir, quiet_libraries, stop_on_signals

    verbose = _verbose() or any(a in ("-v", "--verbose") for a in sys.argv[1:2])
    quiet_libraries(verbose)
    with stop_on_signals() as guard:
        try:
            with private_tempdir() as scratch, native_chatter_to(scratch, verbose):
                code = guard.finish(_run_command(verbose))
        except Stopped as e:                             # while setting up, or while an error line was printed
            code = guard.finish(e.exit_code)
            err_console.print(f"stopped by {e}: no file was left half-written", highlight=False, soft_wrap=True)
    try:
        sys.stdout.flush()
    except BrokenPipeError:                              # the reader went away: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(code)


def _run_command(verbose: bool) -> int:
    """Run the command; what it raised becomes its exit code and one line on stderr."""
    import sys

    from .errors import first_line
    from .guard import Stopped

    try:
        app()      # standalone: Typer/Click handle --help, usage errors (exit 2) and typer.Exit themselves
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except MvDeployError as e:
        _error(str(e) or type(e).__name__)
    except (Stopped, KeyboardInterrupt) as e:
        err_console.print(f"stopped by {e if isinstance(e, Stopped) else 'SIGINT'}: no file was left half-written",
                          highlight=False, soft_wrap=True)
        return e.exit_code if isinstance(e, Stopped) else 130
    except BrokenPipeError:                              # `mvdeploy models | head`: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:                                 # the file system said no: one line, which path, why
        _error((e.strerror or first_line(e)) + (f": {_shown(e.filename)}" if e.filename else ""))
    except Exception as e:                               # a bug of ours: still one line, the traceback on -v
        if verbose:
            raise
        _error(f"unexpected {type(e).__name__}: {first_line(e)} (a bug in mvdeploy; run with --verbose for the traceback)")
    return 1


def _error(text: str) -> None:
    err_console.print(f"[red]error:[/] {_escape(text)}", highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def _shown(path) -> str:
    """A path as text that any terminal can print (undecodable bytes shown as U+FFFD)."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


if __name__ == "__main__":
    main()
