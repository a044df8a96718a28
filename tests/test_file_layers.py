"""The report's per-layer table is measured in the shipped file, with the engine of `mvdeploy debug`; the
PT2E view (plain PT2E int8 in PyTorch) stays, labelled as what it is.

On mobilevit_xxs's TFLite int8 file (the recipe `--precision int8` ships: int8 SiLU, float GELU, float
attention), `stages.4.1.transformer.0.attn.proj` adds the most noise; the PT2E view does not rank it in
its top 8."""
import shutil

from mobilevit_deploy import pipeline
from mobilevit_deploy.debug.run import debug_file
from mobilevit_deploy.fusion import fuse
from mobilevit_deploy.parity import parity_path
from mobilevit_deploy.quantization.cells import analyze_file, reused_cell
from mobilevit_deploy.quantization.report import Report
from mobilevit_deploy.quantization.schedule import measure_model
from mobilevit_deploy.reports import to_markdown
from mobilevit_deploy.spec import Precision
from mvdeploy_targets.tflite.target import int8_modules

PROJ = "stages.4.1.transformer.0.attn.proj"


def test_the_tables_first_layer_is_debugs_first_and_its_fallback_is_measured(model_file, tmp_path):
    """A report (`--fallbacks 1`) reusing the shared TFLite int8 file, as a report reuses a checked file: its
    table ranks first what `debug` ranks first; the PT2E view does not; and that layer, kept float alone in a
    file converted again, is measured against the file (top-1, latency, size). The negative control of the
    kept layer: it is int8 in the plain file."""
    plain = model_file("mobilevit_xxs", "tflite", Precision.int8)
    folder = tmp_path / "artifacts"
    folder.mkdir()
    shutil.copy2(plain.path, folder / plain.path.name)
    shutil.copy2(parity_path(plain.path), parity_path(folder / plain.path.name))
    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=64)
    m = measure_model(prepared, ["tflite"], [Precision.int8], folder, eval_limit=100, repeats=3, fallbacks=1)
    assert m.failures == [] and len(m.rows) == 1
    (table,) = m.file_layers
    (tmp_path / "debug").mkdir()
    path = tmp_path / "debug" / plain.path.name                   # shared: debug writes beside its copy
    shutil.copy(plain.path, path)
    debug = debug_file(path, "mobilevit_xxs", write_files=False)
    assert table.why is None and table.images == 4 and len(table.layers) == len(debug.layers)
    assert table.worst(1)[0]["module"] == debug.ranking(1)[0].module == PROJ
    assert table.worst(1)[0]["noise_added"] > 0.05                  # it adds over 5% noise power in the file

    # the PT2E view: the same model, calibration and quantizer, but plain PT2E in PyTorch, not the shipped recipe
    top8 = [l.module for l in sorted((l for l in m.layers.layers if l.quantized), key=lambda l: -l.noise_added)[:8]]
    assert PROJ not in top8 and m.layers.method.startswith("PT2E view")

    # the measured fallback
    (row,) = table.fallbacks
    assert row["module"] == table.candidates(1)[0]["module"] == PROJ
    assert 0.9 < row["accuracy"] <= 1 and abs(row["delta"]) < 3       # the reference model: 100 held-out digits
    assert row["size_ratio"] > 1.0 and row["latency_ratio"] > 0 and table.fallback_timing
    kept = folder / "keep-float" / PROJ / plain.path.name
    assert row["file"] == str(kept) and kept.exists()
    names = {n for n, _ in fuse(prepared.model).model.named_modules() if n}
    assert int8_modules(kept, (PROJ,), names) == {} and int8_modules(plain.path, (PROJ,), names)[PROJ] >= 1

    text = to_markdown(Report("test", {}, [m]))
    assert "## mobilevit_xxs tflite int8: the layers adding the most noise in the shipped file" in text
    assert text.index(f"| {PROJ} | Linear |") < text.index("Float fallback, measured") < text.index("PT2E view")


def test_the_executorch_table_is_measured_inside_the_xnnpack_delegate(model_file, tmp_path):
    """The shipped .pte, its XNNPACK delegates' values exposed as outputs of a copy (same operators, weights
    and scales: the copy's logits equal the file's): the table names what `debug` ranks first; over 100 modules
    measured, the noisiest are int8 convolutions and linears. (test_debug: the same capture on the fp32 .pte
    passes every module and names a weight changed in the file.)"""
    plain = model_file("mobilevit_xxs", "executorch", Precision.int8)
    path = tmp_path / plain.path.name                              # shared: debug writes beside its copy
    shutil.copy(plain.path, path)
    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=64)
    table = analyze_file(prepared, reused_cell(plain.path, "executorch", Precision.int8, plain.path.parent, None))
    debug = debug_file(path, "mobilevit_xxs", write_files=False)
    assert table.why is None and len(table.layers) == len(debug.layers) > 100 and table.images == 4
    worst = table.worst(5)
    assert [w["module"] for w in worst] == [r.module for r in debug.ranking(5)]
    assert {w["kind"] for w in worst} <= {"Conv2d", "Linear"} and worst[0]["noise_added"] > 0.005
    assert all(w["sqnr_db"] < 30 for w in worst)                   # int8 noise, where fp32 files give > 100 dB
    assert "XNNPACK values exposed as outputs" in table.engine
