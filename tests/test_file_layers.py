"""The report's per-layer table is measured in the shipped file, with the engine of `mvdeploy debug`; the
PT2E view (plain PT2E int8 in PyTorch) stays, labelled as what it is.

On mobilevit_xxs's TFLite int8 file (the recipe `--precision int8` ships: int8 SiLU, float GELU, float
attention), `stages.4.1.transformer.0.attn.proj` adds the most noise; the PT2E view does not rank it in
its top 8."""
import shutil

import torch

from mobilevit_deploy import pipeline
from mobilevit_deploy.calibration import calibration_for
from mobilevit_deploy.debug.run import debug_file
from mobilevit_deploy.quantization.cells import analyze_file, analyze_layers, reused_cell
from mobilevit_deploy.quantization.report import ModelReport, Report
from mobilevit_deploy.reports import to_markdown
from mobilevit_deploy.spec import Precision

PROJ = "stages.4.1.transformer.0.attn.proj"


def test_the_tables_first_layer_is_debugs_first_in_the_shipped_tflite_file(model_file, tmp_path):
    plain = model_file("mobilevit_xxs", "tflite", Precision.int8)
    path = tmp_path / plain.path.name                              # shared: debug writes beside its copy
    shutil.copy(plain.path, path)
    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=64)
    table = analyze_file(prepared, reused_cell(plain.path, "tflite", Precision.int8, plain.path.parent, None))
    debug = debug_file(path, "mobilevit_xxs", write_files=False)
    assert table.why is None and table.images == 4 and len(table.layers) == len(debug.layers)
    assert table.worst(1)[0]["module"] == debug.ranking(1)[0].module == PROJ
    assert table.worst(1)[0]["noise_added"] > 0.05                  # it adds over 5% noise power in the file

    # the PT2E view: the same model, calibration and quantizer, but plain PT2E in PyTorch, not the shipped recipe
    calibration = calibration_for(prepared, None, samples=64)
    images = list(torch.from_numpy(prepared.reference.read("test", prepared.preprocess, 16).images.numpy()))
    view = analyze_layers(prepared, "tflite", [x for b in calibration.batches for x in b][:64], images)
    top8 = [l.module for l in sorted((l for l in view.layers if l.quantized), key=lambda l: -l.noise_added)[:8]]
    assert PROJ not in top8 and view.method.startswith("PT2E view")

    m = ModelReport("mobilevit_xxs", "reference", 64, "digits", 16, 0, None, 0, None, (0.0, 0.0),
                    layers=view, file_layers=[table])
    text = to_markdown(Report("test", {}, [m]))
    assert "## mobilevit_xxs tflite int8: the layers adding the most noise in the shipped file" in text
    assert text.index(f"| {PROJ} | Linear |") < text.index("PT2E view (not a shipped file)")


def test_the_executorch_table_is_measured_inside_the_xnnpack_delegate(model_file, tmp_path):
    """The shipped .pte, its XNNPACK delegates' values exposed as outputs of a copy (same operators, weights
    and scales: the copy's logits equal the file's): the table ranks what `debug` ranks, int8 layers by name."""
    plain = model_file("mobilevit_xxs", "executorch", Precision.int8)
    path = tmp_path / plain.path.name
    shutil.copy(plain.path, path)
    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=64)
    table = analyze_file(prepared, reused_cell(plain.path, "executorch", Precision.int8, plain.path.parent, None))
    debug = debug_file(path, "mobilevit_xxs", write_files=False)
    assert table.why is None and len(table.layers) == len(debug.layers) > 100
    worst = table.worst(5)
    assert [w["module"] for w in worst] == [r.module for r in debug.ranking(5)]
    assert {w["kind"] for w in worst} <= {"Conv2d", "Linear"} and worst[0]["noise_added"] > 0.005
    assert "XNNPACK values exposed as outputs" in debug.engine
