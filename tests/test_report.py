"""Quantization reports: figures on a small model and data set, reproducibility outside the report
code, calibration/evaluation disjointness, unreadable images, per-layer error, the HTML."""
import base64
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mobilevit_deploy import pipeline
from mobilevit_deploy.errors import DataError
from mobilevit_deploy.quantization.layers import analyze, layer_errors, quantize_graph
from mobilevit_deploy.calibration import calibration_for
from mobilevit_deploy.quantization.report import Report
from mobilevit_deploy.quantization.schedule import measure_model
from mobilevit_deploy.versions import tool_versions
from mobilevit_deploy.reports import write_report
from toys import digit_pngs


@pytest.fixture(scope="module")
def onnx_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    prepared = pipeline.prepare_model("mobilevit_xxs")            # the digits reference checkpoint
    model_report = measure_model(prepared, ["onnx"], [pipeline.Precision.fp32], out / "artifacts",
                                 eval_limit=40, repeats=3)
    report = Report("mvdeploy report (test)", tool_versions(), [model_report])
    return prepared, model_report, write_report(report, out)


def test_report_figures(onnx_report):
    prepared, m, files = onnx_report
    assert m.eval_images == 40 and m.eval_source.startswith("digits test split")
    assert m.torch_accuracy >= 0.95
    (row,) = m.rows
    assert row.target == "onnx" and row.precision == "fp32" and row.size_ratio == 1.0
    assert row.accuracy == m.torch_accuracy and row.accuracy_delta == 0.0 and row.top1_agreement == 1.0
    assert row.sqnr_db > 90 and row.latency_ms_median > 0 and row.latency_ms_p90 >= row.latency_ms_median
    saved = json.loads(files["json"].read_text())
    assert saved["models"][0]["rows"][0]["accuracy"] == row.accuracy
    assert saved["tools"]["torch"].startswith("2.13.0") and saved["command"]
    assert "| mobilevit_xxs | onnx | fp32 |" in files["md"].read_text()


def test_report_accuracy_is_reproducible_outside_the_report_code(onnx_report):
    """Re-run the saved artifact with onnxruntime directly on the same images: same accuracy."""
    import onnxruntime as ort
    from mobilevit_deploy.digits import read_digits

    prepared, m, _ = onnx_report
    images = read_digits("test", prepared.preprocess).take(40)
    session = ort.InferenceSession(m.rows[0].artifact, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predictions = [int(np.argmax(session.run(None, {name: x[None].numpy()})[0])) for x in images.images]
    assert np.mean(np.array(predictions) == images.labels.numpy()) == m.rows[0].accuracy


def test_html_is_self_contained_with_plots(onnx_report):
    html = onnx_report[2]["html"].read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) >= 2
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert "http://" not in html and "https://" not in html          # opens offline, from a laptop


def _folder(root, n=4, broken=0):
    rng = np.random.default_rng(0)
    for c in ("0", "1"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    for i in range(broken):
        (root / "0" / f"broken{i}.jpg").write_bytes(b"not an image")
    return root


def test_calibration_never_overlaps_evaluation(tmp_path):
    prepared = pipeline.prepare_model("mobilevit_xxs", weights="random", num_classes=2, image_size=64)
    evaluation = _folder(tmp_path / "eval")
    with pytest.raises(DataError):                 # every calibration file is an evaluation file
        calibration_for(prepared, str(evaluation), evaluation, 10)
    calibration = calibration_for(prepared, str(_folder(tmp_path / "calib", n=3)), evaluation, 10)
    assert calibration.samples == 6
    digits = pipeline.prepare_model("mobilevit_xxs")
    assert calibration_for(digits, None, None, 10).source.startswith("digits train split")


def test_a_report_request_is_planned_before_any_work(tmp_path):
    from mobilevit_deploy.errors import InvalidValueError
    from mobilevit_deploy.quantization.request import ReportRequest, plan_report

    out = tmp_path / "report"
    plan = plan_report(ReportRequest("mobilevit_xxs, mobilevit_xxs", "onnx,tflite", "fp32,int8", out=out))
    assert plan.models == ["mobilevit_xxs"] and plan.targets == ["onnx", "tflite"]
    assert plan.pairs == [("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "int8")]
    with pytest.raises(InvalidValueError, match="pass one of them"):
        plan_report(ReportRequest(workers=2, ray_address="127.0.0.1:1", out=out))
    with pytest.raises(InvalidValueError, match="--artifact-store is where Ray workers"):
        plan_report(ReportRequest(artifact_store=tmp_path / "store", out=out))
    evaluation = _folder(tmp_path / "eval")
    with pytest.raises(DataError, match="overlap: 4 of the 4 images in --calib-data"):
        plan_report(ReportRequest("mobilevit_xxs", "onnx", "fp32", eval_data=evaluation,
                                  calib_data=str(evaluation / "1"), out=out))
    listing = tmp_path / "eval.csv"                 # a listing file: the same disjointness, the same refusals
    listing.write_text("".join(f"eval/1/{i}.png,1\n" for i in range(2)))
    with pytest.raises(DataError, match="overlap: 2 of the 4 images in --calib-data"):
        plan_report(ReportRequest("mobilevit_xxs", "onnx", "fp32", eval_data=listing,
                                  calib_data=str(evaluation / "1"), out=out))
    with pytest.raises(DataError, match="image folder or listing file .*missing does not exist"):
        plan_report(ReportRequest("mobilevit_xxs", "onnx", "fp32", eval_data=tmp_path / "missing", out=out))
    assert not out.exists() and not (tmp_path / "store").exists()


def _figures(m):
    return (m.eval_images, m.eval_skipped, m.torch_accuracy,
            [(r.accuracy, r.top1_agreement, r.cosine_min, r.cosine_mean, r.sqnr_db) for r in m.rows])


def test_shards_by_reference_give_the_figures_of_one_shard_from_a_folder_or_a_listing(onnx_report, tmp_path):
    """The digits checkpoint's ONNX file (reused from the fixture: nothing converts) on 20 digit PNGs and 2 broken
    files: a folder in shards of 5 and a listing file in one shard give the same figures, name the unreadable
    files, and the PyTorch accuracy is the one computed outside the report code. Negative controls: a listing
    whose labels are shifted by one changes the accuracy and nothing else; a file whose shard reads other
    images than the reference's fails its cell instead of being compared row against wrong row."""
    from mobilevit_deploy.data import load_folder
    from mobilevit_deploy.quantization import schedule
    from mobilevit_deploy.runners.torch import TorchRunner

    prepared, _, files = onnx_report
    artifacts = files["json"].parent / "artifacts"
    rows = digit_pngs(tmp_path / "digits", 20, broken=2)
    listing = tmp_path / "digits" / "eval.csv"
    listing.write_text("path,label\n" + "".join(f"{path},{digit}\n" for path, digit in rows))
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("".join(f"digits/{path},{(digit + 1) % 10}\n" for path, digit in rows))

    def measured(eval_data, shard_size, **kw):
        return measure_model(prepared, ["onnx"], [pipeline.Precision.fp32], artifacts, eval_data=eval_data,
                             shard_size=shard_size, repeats=2, **kw)

    folder = measured(tmp_path / "digits", 5)
    listed = measured(listing, 100)
    assert (folder.eval_shards, listed.eval_shards) == (5, 1)
    assert _figures(folder) == _figures(listed) and folder.eval_images == 20 and folder.eval_skipped == 2
    assert sorted(folder.eval_unreadable) == [str(tmp_path / "digits" / "3" / f"broken{i}.png") for i in range(2)]
    assert listed.eval_unreadable == [str(listing.parent / "3" / f"broken{i}.png") for i in range(2)]
    loaded = load_folder(tmp_path / "digits", prepared.preprocess)
    with TorchRunner(prepared.model, input_shape=prepared.input_shape) as runner:
        direct = np.mean(np.argmax(runner.infer(loaded.images.numpy()), axis=1) == loaded.labels.numpy())
    assert folder.torch_accuracy == direct >= 0.9 and folder.rows[0].accuracy == direct

    wrong = measured(shifted, 7)
    assert wrong.torch_accuracy < 0.2 and wrong.rows[0].accuracy == wrong.torch_accuracy
    assert _figures(wrong)[3][0][1:] == _figures(folder)[3][0][1:]          # the logits are the same

    real = schedule.evaluate_shard

    def drops_one(cell, shard, preprocess, threads):
        out = real(cell, shard, preprocess, threads)
        return replace(out, logits=out.logits[1:], labels=out.labels[1:])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schedule, "evaluate_shard", drops_one)
        misread = measured(listing, 100)
    assert misread.rows == [] and misread.torch_accuracy == folder.torch_accuracy
    assert misread.failures == ["onnx fp32: evaluation failed (shard 1): it read 19 images, the PyTorch reference 20 "
                                f"(unreadable here: {listing.parent / '3' / 'broken0.png'}, "
                                f"{listing.parent / '3' / 'broken1.png'})"]


def test_a_missing_evaluation_path_is_refused_before_any_work_in_one_line(tmp_path):
    from conftest import run_cli

    listing = tmp_path / "eval.csv"
    _folder(tmp_path / "eval", n=1)
    listing.write_text("eval/0/0.png,0\neval/1/0.png,1\neval/1/9.png,1\n")
    out = tmp_path / "report"
    ran = run_cli("report", "mobilevit_xxs", "--targets", "onnx", "--precisions", "fp32", "--eval-data", listing,
                  "--out", out)
    assert ran.returncode == 1 and ran.stderr.strip().splitlines() == [
        f"error: listing file {listing}: 1 of its 3 images do not exist (first: line 3, eval/1/9.png)"]
    assert not out.exists()


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def layer_quantizer():
    """The quantizer the TFLite target declares for the layer analysis (the core imports none)."""
    from mobilevit_deploy.targets import get_target

    target = get_target("tflite")
    if target.unavailable_reason():
        pytest.skip(target.unavailable_reason())
    return target.layer_quantizer()


def test_per_layer_error_names_modules_and_measures_fallbacks():
    torch.manual_seed(0)
    model = Toy().eval()
    images = list(torch.rand(6, 3, 16, 16))
    analysis = analyze(model, 16, images[:4], images[4:], layer_quantizer(), candidates=2)
    modules = [layer.module for layer in analysis.layers]
    assert "conv" in modules and "fc" in modules
    assert all(10 < layer.sqnr_db < 80 for layer in analysis.layers if layer.quantized)
    assert 10 < analysis.logits_sqnr_db < 80 and len(analysis.fallbacks) == 2


def test_per_layer_error_of_an_unquantized_graph_is_zero():
    """Negative control for the metric itself: float against float shows no noise anywhere."""
    model = Toy().eval()
    example = torch.zeros(1, 3, 16, 16)
    graph = torch.export.export(model, (example,)).module()
    images = list(torch.rand(2, 3, 16, 16))
    assert all(layer.noise_added == 0 for layer in layer_errors(graph, graph, images))
    quantized = quantize_graph(model, example, images, layer_quantizer())
    assert any(layer.noise_added > 0 for layer in layer_errors(graph, quantized, images))


def test_what_to_ship_is_the_fastest_variant_within_the_accuracy_bound(onnx_report):
    from dataclasses import replace

    from mobilevit_deploy.quantization.recommend import recommend

    _, m, files = onnx_report
    (fp32,) = m.rows
    fast_but_wrong = replace(fp32, precision="int8", latency_ms_median=fp32.latency_ms_median / 4, accuracy_delta=-0.6)
    fast_and_fine = replace(fp32, precision="int8-dynamic", latency_ms_median=fp32.latency_ms_median / 2,
                            accuracy_delta=-0.4, size_ratio=0.3)
    failed_parity = replace(fp32, precision="fp16", latency_ms_median=fp32.latency_ms_median / 8, parity_passed=False)
    candidates = replace(m, rows=[fp32, fast_but_wrong, fast_and_fine, failed_parity])
    pick = recommend(candidates)
    assert pick.row.precision == "int8-dynamic" and pick.latency_ratio == 0.5 and pick.size_ratio == 0.3
    assert "ship onnx int8-dynamic" in pick.line() and "0.50x the latency" in pick.line()
    assert recommend(replace(m, rows=[fast_but_wrong])) is None           # nothing within the bound
    assert "## What to ship" in files["md"].read_text() and "ship onnx fp32" in files["md"].read_text()
