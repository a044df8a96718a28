"""`mvdeploy bench`: interleaved timing of exported files (structure, not speed: speed is for benchmarks)."""
import json

import pytest
import torch
from torch import nn

from mobilevit_deploy.bench import bench
from mobilevit_deploy.spec import ExportSpec
from mobilevit_deploy.targets import get_target


def _toy(tmp_path, name, width):
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(width, 10)).eval()
    torch.manual_seed(0)
    return get_target("onnx").convert(model, ExportSpec("toy", 32), tmp_path / f"{name}.onnx").path


def test_bench_interleaves_and_reports_ratios_to_the_first(tmp_path):
    small, large = _toy(tmp_path, "small", 4), _toy(tmp_path, "large", 64)
    seen = []
    run = bench([small, large, small], num_threads=1, rounds=3, per_round=2, warmup=1,
                progress=lambda done, total: seen.append((done, total)))
    rows = run.rows
    assert [r.file for r in rows] == [str(small), str(large), str(small)]
    assert rows[0].ratio == 1.0 and all(r.runs == 6 for r in rows)
    assert all(0 < r.p10_ms <= r.median_ms <= r.p90_ms for r in rows)
    assert rows[1].ratio == rows[1].median_ms / rows[0].median_ms
    assert seen == [(i, 9) for i in range(1, 10)]       # round-robin: one step per file per round
    assert "onnxruntime" in rows[0].engine and "1 threads" in rows[0].engine
    control = run.control                               # the first file again at the end of each round
    assert control.start_ms == rows[0].median_ms and control.end_ms > 0 and control.disagreement >= 0
    assert run.threads == 1 and run.host.cores >= 1 and run.host.cpu


def test_one_file_timed_twice_around_other_engines_agrees_with_itself(model_file, tmp_path):
    """Engines must not disturb each other's timing: the same TFLite file, benched before and after an
    onnxruntime file (its threads no longer spin) and an ExecuTorch file, in one interleaved run.
    Not a speed assertion: the file against itself, within 10% or its own spread (p10-p90) if that is wider,
    as bench's control judges it (the other xdist worker shares the cores: 1.12x once, with a spread of 40%);
    a spinning onnxruntime pool made it 1.88x."""
    import shutil

    from mobilevit_deploy.spec import Precision

    files = [model_file("mobilevit_xxs", target, Precision.fp32).path for target in ("tflite", "onnx", "executorch")]
    again = tmp_path / "again.tflite"
    shutil.copy(files[0], again)
    run = bench([*files, again], num_threads=1, rounds=10, per_round=5)
    first, last = run.rows[0], run.rows[-1]
    assert [r.target for r in run.rows] == ["tflite", "onnx", "executorch", "tflite"]
    allowed = max(0.1 * first.median_ms, first.p90_ms - first.p10_ms)
    assert abs(last.median_ms - first.median_ms) <= allowed, [(r.target, r.median_ms, r.p10_ms, r.p90_ms) for r in run.rows]
    assert allowed < 0.5 * first.median_ms, "too noisy to tell a disturbed timing from an undisturbed one"


def test_onnxruntime_threads_sleep_when_idle(tmp_path):
    """Spinning intra-op threads held both cores while the next engine ran (a LiteRT file after an
    onnxruntime one: 1.88x its own latency at 2 threads); the session must be told not to spin."""
    from mobilevit_deploy.targets import load_artifact

    target, artifact = load_artifact(_toy(tmp_path, "small", 4))
    with target.runner(artifact, num_threads=2) as runner:
        options = runner.session.get_session_options()
        assert [options.get_session_config_entry(f"session.{pool}.allow_spinning")
                for pool in ("intra_op", "inter_op")] == ["0", "0"]


def test_engines_run_on_the_threads_mvdeploy_threads_names(tmp_path, monkeypatch):
    """Unset: 2 threads; MVDEPLOY_THREADS=3: an engine opened without num_threads runs 3; an explicit
    num_threads wins; a value that is not a count is one clear error."""
    from mobilevit_deploy.errors import InvalidValueError
    from mobilevit_deploy.runners.base import engine_threads
    from mobilevit_deploy.targets import load_artifact

    monkeypatch.delenv("MVDEPLOY_THREADS", raising=False)
    assert engine_threads() == 2
    monkeypatch.setenv("MVDEPLOY_THREADS", "3")
    target, artifact = load_artifact(_toy(tmp_path, "small", 4))
    with target.runner(artifact) as runner:
        assert runner.session.get_session_options().intra_op_num_threads == 3 and "(3 threads)" in runner.engine
    assert target.runner(artifact, num_threads=1).num_threads == 1
    for bad in ("0", "two"):
        monkeypatch.setenv("MVDEPLOY_THREADS", bad)
        with pytest.raises(InvalidValueError, match="MVDEPLOY_THREADS must be a whole number"):
            engine_threads()


def test_the_host_names_the_kernel_features_it_has_and_lacks():
    from mobilevit_deploy.host import parse_cpuinfo

    x86 = parse_cpuinfo("model name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n", "x86_64", 2)
    assert x86.features == ("avx2", "fma", "avx512f", "avx512_vnni")
    assert x86.describe() == "AMD EPYC 9B14 (x86_64, 2 cores; avx2 fma avx512f avx512_vnni; no avx_vnni amx_int8)"
    arm = parse_cpuinfo("CPU implementer\t: 0x41\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd0c\n", "aarch64", 8)
    assert arm.cpu == "ARM CPU implementer 0x41 part 0xd0c" and arm.features == ("asimd", "asimddp", "i8mm")
    assert arm.describe().endswith("; no asimdhp)")


def test_bench_cli_json_and_a_missing_file(cli, tmp_path):
    small = _toy(tmp_path, "small", 4)
    result = cli("bench", small, small, "--rounds", "2", "--repeats", "2", "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["threads"] == 1 and len(data["files"]) == 2 and data["files"][0]["ratio"] == 1.0
    missing = cli("bench", small, tmp_path / "nope.tflite")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "does not exist" in missing.stderr


def test_declared_precision_reads_the_parity_report_then_the_name(tmp_path):
    from mobilevit_deploy.parity.report import declared_precision

    assert declared_precision(tmp_path / "m-int8-static.tflite") == "int8-static"
    assert declared_precision(tmp_path / "m-int8-static-onnx2tf.tflite") == "int8-static"
    assert declared_precision(tmp_path / "m-int8.tflite") == "int8"
    assert declared_precision(tmp_path / "model.tflite") is None
    (tmp_path / "model.tflite.parity.json").write_text('{"precision": "int8-static"}')
    assert declared_precision(tmp_path / "model.tflite") == "int8-static"


def test_bench_labels_an_int8_static_file_as_such_and_keeps_litert_quiet(cli, tmp_path):
    """int8 and int8-static files hold the same tensor types: the name mvdeploy gave the file, or its
    parity report, says which one it is. LiteRT's own lines ("INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU.") never reach the terminal."""
    import shutil

    from mobilevit_deploy.parity import parity_path
    from mobilevit_deploy.spec import Calibration, Precision

    tflite = get_target("tflite")
    if tflite.unavailable_reason():
        pytest.skip(tflite.unavailable_reason())
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10)).eval()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    made = tflite.convert(model, ExportSpec("toy", 32, precision=Precision.int8_static),
                          tmp_path / "toy-int8-static.tflite", Calibration([images], "synthetic", 8)).path
    plain, as_int8 = tmp_path / "plain.tflite", tmp_path / "toy-int8.tflite"
    for copy in (plain, as_int8):
        shutil.copy(made, copy)
    parity_path(plain).write_text(json.dumps({"precision": "int8-static"}))
    result = cli("bench", made, plain, as_int8, "--rounds", "1", "--repeats", "1", "--json", "--threads", "1")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert [f["precision"] for f in json.loads(result.stdout)["files"]] == ["int8-static", "int8-static", "int8"]
    table = cli("bench", made, "--rounds", "1", "--repeats", "1", "--threads", "1")
    assert table.returncode == 0 and table.stderr.strip() == "" and "int8-static" in table.stdout
