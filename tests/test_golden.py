"""Golden files: saved inputs and outputs re-check a file without PyTorch; one changed weight fails."""
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mobilevit_deploy.errors import DataError
from mobilevit_deploy.golden import check_golden, read_golden, save_golden, sha256_of


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from mobilevit_deploy.pipeline import convert, prepare_model
    from mobilevit_deploy.spec import Precision

    prepared = prepare_model("mobilevit_xxs")
    out = tmp_path_factory.mktemp("golden-onnx")
    return convert(prepared, "onnx", prepared.spec(Precision.fp32), out, check=False).artifact.path


@pytest.fixture(scope="module")
def golden(onnx_file, tmp_path_factory):
    return save_golden(onnx_file, tmp_path_factory.mktemp("golden") / "g", "mobilevit_xxs")


def _with_one_weight_scaled(path, out, name="stages.2.1.conv_kxk.conv.weight", factor=1.5):
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), name))
    onnx.save(model, str(out))
    return out


def test_saved_golden_holds_inputs_outputs_checksum_and_versions(golden, onnx_file):
    g = read_golden(golden)
    assert g.inputs.shape[1:] == (3, 64, 64) and g.outputs.shape == (len(g.inputs), 10)
    assert g.meta["sha256"] == sha256_of(onnx_file)
    assert (g.meta["target"], g.meta["precision"]) == ("onnx", "fp32")
    assert g.meta["tolerance"]["max_rel"] == 5e-6
    assert {"torch", "onnxruntime", "mvdeploy"} <= set(g.meta["tools"])
    assert g.meta["samples"]["real"] > 0                    # the reference checkpoint's held-out digits


def test_the_same_file_rechecked_against_its_golden_passes(golden, onnx_file):
    report = check_golden(onnx_file, golden)
    assert report.passed, report.failures
    assert "same file" in report.notes[0]


def test_a_file_with_one_changed_weight_fails_its_golden(golden, onnx_file, tmp_path):
    changed = _with_one_weight_scaled(onnx_file, tmp_path / onnx_file.name)
    report = check_golden(changed, golden)
    assert not report.passed
    assert any("max_rel" in line for line in report.failures)
    assert "different file" in report.notes[0]


def test_a_golden_folder_missing_a_file_is_one_line(golden, onnx_file, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(golden, partial)
    (partial / "outputs.npy").unlink()
    with pytest.raises(DataError, match="lacks outputs.npy"):
        check_golden(onnx_file, partial)
    meta = json.loads((golden / "golden.json").read_text())
    bad = tmp_path / "other-target"
    shutil.copytree(golden, bad)
    (bad / "golden.json").write_text(json.dumps({**meta, "target": "tflite"}))
    with pytest.raises(DataError, match="come from a tflite file"):
        check_golden(onnx_file, bad)


def test_cli_check_golden_exit_codes(cli, golden, onnx_file, tmp_path):
    changed = _with_one_weight_scaled(onnx_file, tmp_path / onnx_file.name)
    failed = cli("check", changed, "--golden", golden)
    assert failed.returncode == 1 and "max_rel" in failed.stderr
    passed = cli("check", onnx_file, "--golden", golden)
    assert passed.returncode == 0, passed.stderr
    missing = cli("check", onnx_file)
    assert missing.returncode == 1 and "--model" in missing.stderr and "Traceback" not in missing.stderr
