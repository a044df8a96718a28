"""The CLI as a user meets it: one readable line and exit code 1 on bad input, nothing half-written."""
import json

import pytest
import torch
from safetensors.torch import save_file

from mobilevit_deploy.models import create_model


def _assert_clean_failure(result, *needles):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def _leftovers(out):
    return sorted(p.name for p in out.rglob("*")) if out.exists() else []


def test_models_json_lists_every_variant(cli):
    result = cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "swin_micro", "swin_tiny"} <= set(rows)
    assert rows["mobilevit_xxs"]["parameters"] == 1_272_024
    assert rows["mobilevit_xxs"]["image_size"] == 256 and rows["swin_tiny"]["image_size"] == 224
    assert 0.2e9 < rows["mobilevit_xxs"]["macs"] < 0.5e9       # the paper: ~0.36 GMACs at 256
    assert 4.0e9 < rows["swin_tiny"]["macs"] < 5.0e9           # the paper: 4.5 GFLOPs (MACs) at 224


def test_convert_onnx_writes_artifact_and_parity_json(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", "mobilevit_xxs", "--target", "onnx", "--image-size", "64", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "mobilevit_xxs-fp32.onnx.parity.json").read_text())
    for key in ("artifact", "target", "precision", "reference", "samples", "passed", "metrics",
                "tolerance", "failures", "weights"):
        assert key in report
    assert report["passed"] is True and report["target"] == "onnx"
    assert report["weights"].startswith("reference:mobilevit_xxs_digits")     # the shipped default
    assert report["metrics"]["max_rel"] < 5e-6 and report["metrics"]["cosine_min"] > 0.999999
    assert _leftovers(out) == ["mobilevit_xxs-fp32.onnx", "mobilevit_xxs-fp32.onnx.parity.json"]
    assert "pass" in result.stdout

    check = cli("check", out / "mobilevit_xxs-fp32.onnx", "--model", "mobilevit_xxs")
    assert check.returncode == 0, check.stderr


def test_check_catches_a_wrong_artifact(cli, tmp_path):
    """Negative control: an ONNX file from other weights fails the check with exit code 1."""
    out = tmp_path / "out"
    other = create_model("mobilevit_xxs", image_size=64)
    with torch.no_grad():
        other.head.fc.weight.mul_(1.01)
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    assert cli("convert", "--target", "onnx", "--image-size", "64", "--weights", tmp_path / "other.safetensors",
               "--out", out).returncode == 0
    result = cli("check", out / "mobilevit_xxs-fp32.onnx", "--model", "mobilevit_xxs")
    assert result.returncode == 1
    assert "max_rel" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((out / "mobilevit_xxs-fp32.onnx.parity.json").read_text())["passed"] is False


@pytest.mark.parametrize("args,needles", [
    (("convert", "mobilevit_xxx", "--target", "onnx"), ("unknown model 'mobilevit_xxx'", "mobilevit_xxs")),
    (("convert", "--target", "tflit"), ("unknown target 'tflit'", "did you mean 'tflite'",)),
    (("convert", "--target", "onnx", "--precision", "fp8"), ("unknown precision 'fp8'",)),
    (("convert", "--target", "onnx", "--image-size", "100"), ("multiple of 32",)),
    (("convert", "--target", "onnx", "--weights", "missing.safetensors"), ("does not exist",)),
    (("check", "missing.onnx", "--model", "mobilevit_xxs"), ("does not exist",)),
    (("convert", "--target", "coreml", "--precision", "int4"), ("needs --ios 18",)),
    (("convert", "--target", "tflite", "--precision", "int8", "--weights", "random"), ("--calib-data",)),
], ids=["model", "target", "precision", "image-size", "weights-missing", "artifact-missing", "coreml-int4-ios17",
        "int8-without-calibration"])
def test_bad_input_is_one_clear_line(cli, tmp_path, args, needles):
    out = tmp_path / "out"
    result = cli(*args, "--out", out) if args[0] == "convert" else cli(*args)
    _assert_clean_failure(result, *needles)
    assert not out.exists()


def test_corrupt_and_foreign_weights(cli, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00\x01garbage")
    _assert_clean_failure(cli("convert", "--target", "onnx", "--image-size", "64", "--weights",
                              tmp_path / "corrupt.safetensors", "--out", out), "cannot read weights")
    save_file(create_model("swin_micro", image_size=64).state_dict(), str(tmp_path / "swin.safetensors"))
    _assert_clean_failure(cli("convert", "mobilevit_xxs", "--target", "onnx", "--image-size", "64", "--weights",
                              tmp_path / "swin.safetensors", "--out", out), "weights do not fit mobilevit_xxs",
                          "missing keys", "unexpected keys")
    assert _leftovers(out) == []


def test_num_classes_rebuilds_head(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", "swin_micro", "--target", "onnx", "--image-size", "64", "--num-classes", "10",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    import onnx
    dims = onnx.load(str(out / "swin_micro-fp32.onnx")).graph.output[0].type.tensor_type.shape.dim
    assert dims[-1].dim_value == 10


def test_help_without_args(cli):
    result = cli()
    assert "convert" in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_check_with_the_wrong_class_count_is_one_line(cli, tmp_path):
    """A 10-class file checked as a 5-class model: a shape mismatch named in one line, no traceback,
    no parity.json vouching for anything."""
    out = tmp_path / "out"
    assert cli("convert", "--target", "onnx", "--out", out).returncode == 0     # the digits checkpoint: 10 classes
    (out / "mobilevit_xxs-fp32.onnx.parity.json").unlink()
    result = cli("check", out / "mobilevit_xxs-fp32.onnx", "--model", "mobilevit_xxs", "--num-classes", "5")
    _assert_clean_failure(result, "has 10 outputs, the model 5")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "mobilevit_xxs-fp32.onnx.parity.json").exists()


def test_foreign_target_option_is_refused_before_any_work(cli, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(cli("convert", "--target", "tflite", "--ios", "16", "--out", out),
                          "target tflite has no option 'ios'")
    assert not out.exists()


@pytest.mark.parametrize("args", [("--help",), ("convert", "--image-size", "0"), ("convert", "--image-size", "abc"),
                                  ("doctor",)], ids=["help", "bad-value", "usage-error", "doctor"])
def test_a_warm_run_is_the_fresh_process_byte_for_byte(args, tmp_path):
    """`run_cli` forks an interpreter that has imported the CLI (tests/warm_cli.py): the same command in a
    new interpreter gives the same exit code, stdout and stderr. A call that changes what Python reads at
    start-up (PYTHONPATH) is not served warm."""
    import os

    from conftest import run_cli, run_fresh
    from warm_cli import warm_server

    warm, fresh = run_cli(*args, cwd=tmp_path), run_fresh(*args, env=dict(os.environ), cwd=tmp_path)
    assert warm_server().serves(dict(os.environ)) and not warm_server().serves({**os.environ, "PYTHONPATH": "/x"})
    assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_a_server_whose_import_writes_anything_serves_nothing(monkeypatch):
    """The negative control of the warm CLI: an interpreter that prints while it imports the CLI (here
    PYTHONVERBOSE's import lines) would hide from the one-line tests what a user sees, so it serves no call."""
    from warm_cli import WarmCli

    monkeypatch.setenv("PYTHONVERBOSE", "1")
    server = WarmCli()
    try:
        assert server.chatter and not server.usable and not server.serves(dict(server.env))
    finally:
        server.close()
