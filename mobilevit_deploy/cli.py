"""`mvdeploy`: a thin Typer app. Each command parses, calls the library, renders, maps errors."""
from __future__ import annotations

import json
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
            err_console.print(f"  [red]{Path(report.artifact).name}[/]: {line}")


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
    from .errors import UnknownNameError
    from .spec import Precision

    out = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        try:
            out.append(Precision(item))
        except ValueError:
            raise UnknownNameError("precision", item, [p.value for p in Precision]) from None
    return out


@app.command()
def convert(
    model: Annotated[str, typer.Argument(help="model name (see `mvdeploy models`)")] = "mobilevit_xxs",
    target: Annotated[str, typer.Option("--target", help="onnx, tflite or coreml")] = "tflite",
    precision: Annotated[str, typer.Option("--precision", help="one or more, comma-separated: fp32,fp16,int8,...")] = "fp32",
    weights: WeightsOpt = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="square input side")] = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder [default: mvdeploy-out/<model>]")] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="skip the parity check")] = False,
    no_fuse: Annotated[bool, typer.Option("--no-fuse", help="export the unfused model")] = False,
) -> None:
    """Convert a model for a target, check parity against PyTorch, write <model>-<precision><suffix>."""
    from . import pipeline

    precisions = _precisions(precision)
    prepared = pipeline.prepare_model(model, weights, num_classes, image_size)
    out_dir = out or Path("mvdeploy-out") / model
    inputs = None if no_check else pipeline.parity_inputs(prepared, data, progress=True)
    table = _parity_table()
    failed = []
    for p in precisions:
        with console.status(f"converting {model} to {target} {p.value}..."):
            result = pipeline.convert(prepared, target, p, out_dir, do_fuse=not no_fuse,
                                      check=not no_check, inputs=inputs)
        _parity_row(table, Path(result.artifact.path).name, p.value, result.artifact.size_bytes,
                    result.report, result.seconds)
        if result.report is not None and not result.report.passed:
            failed.append(result.report)
    console.print(table)
    if prepared.weights == "random":
        console.print("[yellow]weights are random[/]: parity on random weights is a weak test; pass --weights and --data")
    for report in failed:
        _print_failures(report)
    if failed:
        raise typer.Exit(1)


@app.command()
def check(
    artifact: Annotated[Path, typer.Argument(help="an exported file (.onnx, .tflite, .mlpackage)")],
    model: Annotated[str, typer.Option("--model", help="the PyTorch model it should match")],
    weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None,
    data: DataOpt = None,
) -> None:
    """Check any artifact (also one mvdeploy did not make) against the PyTorch model."""
    from converters.base import target_for_path
    from . import pipeline
    from .errors import ArtifactError
    from .parity import parity_path

    if not artifact.exists():
        raise ArtifactError(f"artifact {artifact} does not exist")
    target = target_for_path(artifact)
    loaded = target.load(artifact)
    shape = loaded.inputs[0].shape
    size = shape[2] if loaded.inputs[0].layout is None or loaded.inputs[0].layout.value == "nchw" else shape[1]
    classes = num_classes or int(loaded.outputs[0].shape[-1])
    prepared = pipeline.prepare_model(model, weights, classes, size)
    inputs = pipeline.parity_inputs(prepared, data, progress=True)
    report = pipeline.check_artifact(loaded, target, prepared, inputs)
    report.write(parity_path(artifact))
    table = _parity_table()
    _parity_row(table, artifact.name, loaded.precision.value, loaded.size_bytes, report, None)
    console.print(table)
    console.print(f"engine: {report.engine}; report: {parity_path(artifact)}")
    _print_failures(report)
    if not report.passed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: library errors become one readable line and exit code 1."""
    try:
        app()      # standalone: Typer/Click handle --help, usage errors and typer.Exit themselves
    except MvDeployError as e:
        err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
