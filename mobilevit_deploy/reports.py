"""Rendering only: a quantization Report as report.json, report.md and a self-contained report.html."""
from __future__ import annotations

import html
import json
from pathlib import Path

from .figures import png_base64, pyplot
from .outputs import ensure_folder, write_text_atomic


def _fmt(value, pattern: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, pattern)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


HEADLINE = ("model", "target", "precision", "size", "x fp32", "latency ms (median / p90)", "accuracy",
            "vs torch fp32", "top-1 agree", "cosine min", "SQNR dB", "parity")


def headline_rows(report) -> list[tuple[str, ...]]:
    rows = []
    for m in report.models:
        rows.append((m.model, "torch", "fp32 (reference)", "-", "-",
                     f"{m.torch_latency_ms[0]:.2f} / {m.torch_latency_ms[1]:.2f}", _pct(m.torch_accuracy),
                     "-", "-", "-", "-", "-"))
        for r in m.rows:
            latency = (f"{r.latency_ms_median:.2f} / {r.latency_ms_p90:.2f}" if r.latency_ms_median is not None
                       else (r.latency_note or "-").split(" (")[0])        # the reason is in report.json
            rows.append((r.model, r.target, r.precision, f"{r.size_bytes / 1e6:.2f} MB", _fmt(r.size_ratio),
                         latency, _pct(r.accuracy),
                         "-" if r.accuracy_delta is None else f"{r.accuracy_delta:+.2f} pt",
                         _pct(r.top1_agreement), f"{r.cosine_min:.5f}", f"{r.sqnr_db:.1f}",
                         "pass" if r.parity_passed else "FAIL"))
    return rows


ARM64_HEADER = ("model", "target", "precision", "CPU profile", "max rel", "cosine min", "top-1 agree",
                "x86-vs-ARM max rel", "parity")


ARM64_NOTE = ("Each file run by its engine's ARM64 build (XNNPACK's NEON kernels) on an emulated phone CPU, "
              "against PyTorch on the parity images; x86-vs-ARM is how far the ARM64 outputs are from this "
              "machine's. Emulated: numbers, never timing.")


def arm64_rows(report) -> list[tuple[str, ...]]:
    """Each variant checked on ARM64, one row per emulated CPU (empty when the report ran without --arch arm64)."""
    return [(r.model, r.target, r.precision, a["profile"], _fmt(a["max_rel"], ".2e"), _fmt(a["cosine_min"], ".5f"),
             _pct(a["top1_agreement"]), _fmt(a["vs_host_max_rel"], ".2e"), "pass" if a["passed"] else "FAIL")
            for m in report.models for r in m.rows for a in r.arm64]


def ship_lines(report) -> list[str]:
    """One line per model: the variant to ship (fastest measured within the accuracy bound)."""
    from .quantization.recommend import ACCURACY_BOUND_PT, recommend

    executor = getattr(report, "executor", None) or {}
    lines = []
    for m in report.models:
        pick = recommend(m, host=executor.get("latency_host"), caveat=executor.get("latency_int8_caveat"))
        lines.append(pick.line() if pick else
                     f"{m.model}: no timed variant is within {ACCURACY_BOUND_PT} pt of PyTorch fp32 with parity passed")
    return lines


def ran_on(report) -> str | None:
    """Where the report's tasks ran, in one line (None for reports that do not say)."""
    e = getattr(report, "executor", None)
    if not e:
        return None
    ray = f" (ray {e['ray']})" if e.get("ray") else ""
    store = f"; files through {e['artifact_store']}" if e.get("artifact_store") else ""
    where = f"on {e['latency_host']}" if e.get("latency_host") else "on the machine that wrote the report"
    tasks = e.get("tasks") or {}
    tally = (f"; {tasks['tasks']} tasks ({tasks['failed']} failed, {tasks['retried']} retried), "
             f"{tasks['image_evaluations']} image evaluations at {tasks['images_per_second']} images/s"
             if tasks.get("images_per_second") else "")
    return (f"{e['description']}{ray}; evaluation in shards of {e['shard_size']} images{store}{tally}; "
            f"latency timed {where}, one variant at a time")


UNREADABLE_NAMED = 20          # unreadable images named in report.md / .html (report.json names them all)


def evaluation_line(m) -> str:
    """Where a model's evaluation images came from, how many, and the unreadable ones by name."""
    line = f"evaluation: {m.eval_images} images from {m.eval_source}" + (
        f" in {m.eval_shards} shards" if m.eval_shards else "")
    if m.eval_skipped:
        names = getattr(m, "eval_unreadable", [])[:UNREADABLE_NAMED]
        more = m.eval_skipped - len(names)
        line += (f" ({m.eval_skipped} unreadable skipped" + (f": {', '.join(names)}" if names else "")
                 + (f" and {more} more, all in report.json" if names and more > 0 else "") + ")")
    return line


def _markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _layer_rows(m, top: int = 10) -> list[tuple[str, ...]]:
    worst = sorted((l for l in m.layers.layers if l.quantized), key=lambda l: -l.noise_added)[:top]
    return [(l.module, l.op, f"{l.sqnr_db:.1f}", f"{100 * l.noise_added:.3f}%") for l in worst]


FILE_LAYER_HEADER = ("module", "kind", "output SQNR dB", "noise added")


def _file_layer_rows(f, top: int = 8) -> list[tuple[str, ...]]:
    return [(l["module"], l["kind"], f"{l['sqnr_db']:.1f}", f"{100 * l['noise_added']:.3f}%") for l in f.worst(top)]


FALLBACK_HEADER = ("kept in float", "kind", "noise added", "top-1 %", "vs this file (points)", "latency ratio", "size MB")


def _fallback_rows(f) -> list[tuple[str, ...]]:
    """The measured fallbacks (--fallbacks): each layer kept float alone, in a file converted again."""
    def row(r):
        if "error" in r:
            return (r["module"], r["kind"], f"{100 * r['noise_added']:.3f}%", r["error"], "", "", "")
        latency = "-" if r["latency_ratio"] is None else f"{r['latency_ratio']:.2f}"
        return (r["module"], r["kind"], f"{100 * r['noise_added']:.3f}%", f"{100 * r['accuracy']:.2f}",
                f"{r['delta']:+.2f}", latency, f"{r['size_bytes'] / 1e6:.3f}")
    return [row(r) for r in f.fallbacks]


def _fallback_note(f) -> str:
    return ("Float fallback, measured: the file converted again with each of these layers kept float alone "
            f"(`--keep-float MODULE`), top-1 on the report's images against this file's, latency against this "
            f"file's in one interleaved run ({f.fallback_timing}), size.")


def _file_layer_title(m, f) -> str:
    return f"{m.model} {f.target} {f.precision}: the layers adding the most noise in the shipped file"


def _file_layer_note(f) -> str:
    return (f"Measured in the file ({f.engine}, {f.images} images): each module's output in the file against "
            "PyTorch's, as `mvdeploy debug` does; noise added = noise power / signal power added since the "
            "previous mapped module. Keep one float with `--keep-float MODULE`." if f.why is None else f"Not measured: {f.why}.")


def to_markdown(report) -> str:
    out = ["# mvdeploy quantization report", "", f"Command: `{report.command}`", ""]
    if ran_on(report):
        out += [f"Ran on: {ran_on(report)}.", ""]
    for m in report.models:
        out += [f"## {m.model}", "",
                f"- weights: {m.weights}; input {m.image_size}x{m.image_size}",
                f"- {evaluation_line(m)}",
                f"- calibration: {m.calib_images} images from {m.calib_source}" if m.calib_source else "- calibration: none needed",
                ""]
    out += ["## What to ship", ""] + [f"- {line}" for line in ship_lines(report)] + [""]
    out += ["## Results", "", _markdown_table(HEADLINE, headline_rows(report)), ""]
    if arm64_rows(report):
        out += ["## Parity on ARM64", "", ARM64_NOTE, "", _markdown_table(ARM64_HEADER, arm64_rows(report)), ""]
    failures = [f"- {m.model} {line}" for m in report.models for line in m.failures]
    if failures:
        out += ["## Failed", "", *failures, ""]
    for m in report.models:
        for f in m.file_layers:
            out += ["", f"## {_file_layer_title(m, f)}", "", _file_layer_note(f), ""]
            out += [_markdown_table(FILE_LAYER_HEADER, _file_layer_rows(f)), ""] if f.layers else []
            out += [_fallback_note(f), "", _markdown_table(FALLBACK_HEADER, _fallback_rows(f)), ""] if f.fallbacks else []
        if m.layers:
            out += ["", f"## {m.model}: int8 error by layer, PT2E view (not a shipped file)", "",
                    f"Logits SQNR of the int8 graph: {m.layers.logits_sqnr_db:.1f} dB over {m.layers.images} images. "
                    f"Method: {m.layers.method}.", "",
                    _markdown_table(("module", "last op", "output SQNR dB", "noise added"), _layer_rows(m)), "",
                    "Float fallback of the layers adding the most noise, measured on the PT2E graph with the module's "
                    "inputs and weights left in float (experimental emulation, not a mixed-precision TFLite build; "
                    "a gain near zero or below means the fallback would not help):", ""]
            out += [f"- `{f.module}`: {f.logits_sqnr_db:.1f} dB ({f.gain_db:+.2f} dB)" for f in m.layers.fallbacks]
    out += ["", "## Tools", "", ", ".join(f"{k} {v}" for k, v in report.tools.items()), ""]
    return "\n".join(out)


def plots(report) -> dict[str, str]:
    """Base64 PNGs: accuracy against size, latency per variant, per-layer SQNR."""
    plt = pyplot()
    out = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in report.models:
        for target in sorted({r.target for r in m.rows}):
            rows = [r for r in m.rows if r.target == target and r.accuracy is not None]
            ax.scatter([r.size_bytes / 1e6 for r in rows], [100 * r.accuracy for r in rows], label=f"{m.model} {target}")
            for r in rows:
                ax.annotate(r.precision, (r.size_bytes / 1e6, 100 * r.accuracy), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        if m.torch_accuracy is not None:
            ax.axhline(100 * m.torch_accuracy, linestyle=":", linewidth=1, color="gray")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy against size (dotted: PyTorch fp32)")
    ax.legend(fontsize=7)
    out["accuracy_vs_size"] = png_base64(fig)

    timed = [(f"{m.model}\n{r.target} {r.precision}", r.latency_ms_median, r.latency_ms_p90)
             for m in report.models for r in m.rows if r.latency_ms_median is not None]
    if timed:                  # PyTorch eager is left out: its bar would flatten every phone-format bar
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(timed)), 4))
        names = [t[0] for t in timed]
        ax.bar(names, [t[1] for t in timed], label="median")
        ax.scatter(names, [t[2] for t in timed], color="black", marker="_", s=200, label="p90")
        ax.set_ylabel("latency (ms, 1 image)")
        eager = ", ".join(f"{m.model} {m.torch_latency_ms[0]:.1f} ms" for m in report.models)
        ax.set_title(f"latency per variant on this machine (PyTorch eager, not drawn: {eager})", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=60)
        ax.legend(fontsize=7)
        out["latency"] = png_base64(fig)

    for m in report.models:
        if not m.layers:
            continue
        fig, ax = plt.subplots(figsize=(9, 3.5))
        layers = m.layers.layers
        ax.plot(range(len(layers)), [l.sqnr_db for l in layers], marker=".", linewidth=1)
        worst = sorted(range(len(layers)), key=lambda i: -layers[i].noise_added)[:5]
        for i in worst:
            ax.annotate(layers[i].module, (i, layers[i].sqnr_db), fontsize=6, rotation=30)
        ax.set_xlabel("layer (execution order)")
        ax.set_ylabel("output SQNR (dB)")
        ax.set_title(f"{m.model}: int8 SQNR by layer (labels: the layers adding the most noise)")
        out[f"layers_{m.model}"] = png_base64(fig)
    return out


def to_html(report) -> str:
    images = plots(report)

    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mvdeploy quantization report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}</style>",
             "</head><body><h1>mvdeploy quantization report</h1>",
             f"<p><code>{html.escape(report.command)}</code></p>"]
    if ran_on(report):
        parts.append(f"<p>Ran on: {html.escape(ran_on(report))}.</p>")
    for m in report.models:
        parts.append(f"<p><b>{html.escape(m.model)}</b>: weights {html.escape(m.weights)}; "
                     f"{html.escape(evaluation_line(m))}; calibration "
                     f"{m.calib_images} images from {html.escape(str(m.calib_source))}</p>")
    parts.append("<h2>what to ship</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in ship_lines(report))
                 + "</ul>")
    parts.append(table(HEADLINE, headline_rows(report)))
    if arm64_rows(report):
        parts.append(f"<h2>parity on ARM64</h2><p>{html.escape(ARM64_NOTE)}</p>" + table(ARM64_HEADER, arm64_rows(report)))
    failures = [f"{m.model} {line}" for m in report.models for line in m.failures]
    if failures:
        parts.append("<h2>failed</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in failures) + "</ul>")
    for key, data in images.items():
        parts.append(f"<h2>{html.escape(key.replace('_', ' '))}</h2><img alt='{key}' src='data:image/png;base64,{data}'>")
    for m in report.models:
        for f in m.file_layers:
            parts.append(f"<h2>{html.escape(_file_layer_title(m, f))}</h2><p>{html.escape(_file_layer_note(f))}</p>")
            parts.append(table(FILE_LAYER_HEADER, _file_layer_rows(f)) if f.layers else "")
            if f.fallbacks:
                parts.append(f"<p>{html.escape(_fallback_note(f))}</p>" + table(FALLBACK_HEADER, _fallback_rows(f)))
        if m.layers:
            parts.append(f"<h2>{html.escape(m.model)}: layers adding the most int8 noise, PT2E view (plain PT2E int8 "
                         "in PyTorch, not a shipped file)</h2>")
            parts.append(table(("module", "last op", "output SQNR dB", "noise added"), _layer_rows(m)))
            parts.append("<ul>" + "".join(
                f"<li>float fallback of <code>{html.escape(f.module)}</code>: logits {f.logits_sqnr_db:.1f} dB "
                f"({f.gain_db:+.2f} dB)</li>" for f in m.layers.fallbacks) + "</ul>")
    parts.append("<h2>tools</h2><p>" + html.escape(", ".join(f"{k} {v}" for k, v in report.tools.items())) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    ensure_folder(out_dir)
    files = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    texts = {"json": json.dumps(report.to_dict(), indent=2) + "\n", "md": to_markdown(report), "html": to_html(report)}
    for kind, path in files.items():        # rendered first: a rendering error writes nothing
        write_text_atomic(path, texts[kind])
    return files
