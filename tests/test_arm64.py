"""--arch arm64: .tflite files checked on ai-edge-litert's ARM64 build, on emulated phone CPUs (issue 19).

The reference models' fp32 and int8 files (the matrix's own, shared) pass their tolerances on ARM64; the
x86-vs-ARM difference of an int8 file is measured, reported, and not zero; a file with its head negated
fails on ARM64 as on x86; the worker really runs aarch64 code; without the engine, one line says how to
get it. Emulated runs are slow (seconds per file at 64x64), so each file is checked once here.
"""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from mobilevit_deploy.emulation import (DEFAULT_PROFILE, ROOT_ENV, Arch, EmulatorMissingError, arm_cpus, find_emulator,
                                        profile)
from mobilevit_deploy.errors import ArtifactError, TargetUnavailableError, UnknownNameError
from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target

from faults import negate_head


def _engine_or_skip():
    try:
        return find_emulator()
    except EmulatorMissingError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def engine():
    return _engine_or_skip()


@pytest.mark.unit
def test_profiles_parse_and_refuse_unknown_names():
    assert arm_cpus(Arch.host, "cortex-a53") == ()
    assert [c.qemu_cpu for c in arm_cpus("arm64")] == [DEFAULT_PROFILE]
    assert [c.name for c in arm_cpus("arm64", "cortex-a76, cortex-a53")] == ["cortex-a76", "cortex-a53"]
    with pytest.raises(UnknownNameError, match="cortex-a77.*did you mean.*cortex-a76"):
        arm_cpus("arm64", "cortex-a77")


@pytest.mark.unit
def test_missing_engine_is_one_line_naming_the_way_to_get_it(tmp_path):
    with pytest.raises(EmulatorMissingError, match=r"--arch arm64 needs the ARM64 engine .* run `make install`"):
        find_emulator(tmp_path / "nowhere")


def test_missing_engine_through_the_cli(cli, model_file, tmp_path):
    file = model_file("mobilevit_xxs", "tflite", Precision.fp32)
    result = cli("check", str(file.path), "--model", "mobilevit_xxs", "--arch", "arm64",
                 env={ROOT_ENV: str(tmp_path / "nowhere")})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "needs the ARM64 engine" in lines[0] and "make install" in lines[0] and "Traceback" not in result.stderr


def test_other_targets_are_refused_before_any_work(cli, model_file):
    file = model_file("mobilevit_xxs", "onnx", Precision.fp32)
    result = cli("check", str(file.path), "--model", "mobilevit_xxs", "--arch", "arm64")
    assert result.returncode == 1 and "onnx files are not run on ARM64 here" in result.stderr, result.stderr
    with pytest.raises(TargetUnavailableError, match="Core ML runs only on Apple"):
        from mobilevit_deploy.arm64 import require_arm64
        require_arm64(get_target("coreml"), arm_cpus("arm64"))


def test_the_worker_runs_aarch64_code_and_is_never_timed(engine, model_file):
    target = get_target("tflite")
    artifact = target.load(model_file("mobilevit_xxs", "tflite", Precision.int8).path)
    image = np.zeros(artifact.inputs[0].canonical_shape, np.float32)
    with target.runner(artifact) as host:
        assert host.machine == os.uname().machine and host.latency_unmeasurable is None
    with target.runner(artifact, arm_cpu=profile("cortex-a53")) as arm:
        assert arm.machine == "aarch64" and "asimd" in arm.cpu_features and "asimddp" not in arm.cpu_features
        assert "aarch64 build on an emulated cortex-a53" in arm.engine and engine.qemu_version in arm.engine
        assert arm.infer(image).shape == (1, 10)
        with pytest.raises(ArtifactError, match="emulated time is not a phone's time"):
            arm.time_inference(image, repeats=1)


def test_a_crash_of_the_emulated_engine_names_the_signal(engine, model_file):
    target = get_target("tflite")
    artifact = target.load(model_file("mobilevit_xxs", "tflite", Precision.fp32).path)
    image = np.zeros(artifact.inputs[0].canonical_shape, np.float32)
    with target.runner(artifact, arm_cpu=profile(DEFAULT_PROFILE)) as arm:
        os.kill(arm._proc.pid, signal.SIGSEGV)            # the emulator dies of its guest's signal
        arm._proc.wait(timeout=30)
        with pytest.raises(ArtifactError, match="crashed with SIGSEGV"):
            arm.infer(image)


@pytest.fixture(scope="module")
def arm_checked(engine, model_file, tmp_path_factory):
    """Each reference model's fp32 and int8 .tflite checked with --arch arm64 (the default profile), once, on
    4 synthetic + 16 real parity images: 20 of the matrix's 36, the fewest on which top-1 agreement can be 0.95
    with one image apart (swin_micro's int8 file has one), as each emulated inference takes about a second
    here. check_file's own path, on every parity image, is the CLI test's below."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.parity import parity_path
    from mobilevit_deploy.targets import load_artifact

    out, folder = {}, tmp_path_factory.mktemp("arm64")
    for name in ("mobilevit_xxs", "swin_micro"):
        prepared = pipeline.prepare_model(name, image_size=64)
        inputs = pipeline.parity_inputs(prepared, synthetic=4, real=16)      # the matrix's synthetic four
        for precision in (Precision.fp32, Precision.int8):
            source = model_file(name, "tflite", precision).path
            copy = folder / source.name
            copy.write_bytes(source.read_bytes())
            target, artifact = load_artifact(copy)
            report = pipeline.check_artifact(artifact, target, prepared, inputs, arm_cpus=arm_cpus("arm64"))
            report.write(parity_path(copy))
            out[name, precision] = report
    return out


@pytest.mark.parametrize("name", ["mobilevit_xxs", "swin_micro"])
@pytest.mark.parametrize("precision", [Precision.fp32, Precision.int8], ids=lambda p: p.value)
def test_reference_files_pass_on_arm64(arm_checked, name, precision):
    report = arm_checked[name, precision]
    assert report.passed, report.failures
    (row,) = report.arm64
    assert row["machine"] == "aarch64" and row["profile"] == DEFAULT_PROFILE and row["emulated"] is True
    assert row["dot_product"] is True            # the Cortex-A76 profile's int8 dot-product instructions
    m = row["metrics"]
    assert row["failures"] == []
    assert m["top1_agreement"] >= 0.95 and m["cosine_min"] > (0.9999 if precision is Precision.fp32 else 0.98), m
    if precision is Precision.fp32:    # the two builds' fp32 kernels differ by rounding only
        assert row["vs_host"]["max_rel"] < 1e-5, row["vs_host"]


def test_the_x86_vs_arm_difference_of_an_int8_file_is_measured_and_not_zero(arm_checked):
    """XNNPACK's ARM int8 kernels requantize differently: the difference is there, and it is reported."""
    differences = {name: arm_checked[name, Precision.int8].arm64[0]["vs_host"]["max_rel"]
                   for name in ("mobilevit_xxs", "swin_micro")}
    assert differences["mobilevit_xxs"] > 1e-3, differences
    written = json.loads(Path(arm_checked["mobilevit_xxs", Precision.int8].artifact + ".parity.json").read_text())
    assert written["arm64"][0]["vs_host"]["max_rel"] == differences["mobilevit_xxs"]
    assert any("x86-vs-ARM max_rel" in line for line in arm_checked["mobilevit_xxs", Precision.int8].proof_lines())


def test_negated_head_fails_on_arm64(engine, model_file, cli, tmp_path):
    """The negative control: a file whose logits are flipped fails its ARM64 row, through the CLI."""
    source = model_file("mobilevit_xxs", "tflite", Precision.fp32).path
    faulty = tmp_path / source.name
    faulty.write_bytes(negate_head(source.read_bytes()))
    result = cli("check", str(faulty), "--model", "mobilevit_xxs", "--arch", "arm64")
    assert result.returncode == 1, result.stdout
    assert "on arm64 cortex-a76 (emulated)" in result.stdout
    report = json.loads((tmp_path / (source.name + ".parity.json")).read_text())
    (row,) = report["arm64"]
    assert row["failures"] and row["metrics"]["cosine_min"] < 0, row
    assert any(f.startswith("arm64 cortex-a76: ") for f in report["failures"])


def test_report_puts_arm64_rows_beside_the_x86_ones(arm_checked, cli, tmp_path):
    """`mvdeploy report --arch arm64`: both cells reuse files whose reports already have their ARM64 rows (the
    --arch arm64 checks above; a report's own cell converts through convert_all with the same arm_cpus,
    which check_file and convert use); the rows are in report.json, report.md and the terminal table."""
    import shutil

    from mobilevit_deploy.parity import parity_path

    out = tmp_path / "report"
    folder = out / "artifacts" / "mobilevit_xxs"
    folder.mkdir(parents=True)
    for precision in (Precision.fp32, Precision.int8):
        checked = Path(arm_checked["mobilevit_xxs", precision].artifact)
        shutil.copy2(checked, folder / checked.name)
        shutil.copy2(parity_path(checked), parity_path(folder / checked.name))
    result = cli("report", "mobilevit_xxs", "--targets", "tflite", "--precisions", "fp32,int8", "--eval-limit", "20",
                 "--repeats", "2", "--out", out, "--arch", "arm64")
    assert result.returncode == 0, result.stderr
    (model,) = json.loads((out / "report.json").read_text())["models"]
    rows = {r["precision"]: r for r in model["rows"]}
    for precision in ("fp32", "int8"):
        (arm,) = rows[precision]["arm64"]
        assert arm["profile"] == DEFAULT_PROFILE and arm["passed"] and arm["top1_agreement"] >= 0.95, arm
    assert rows["fp32"]["arm64"][0]["vs_host_max_rel"] < 1e-5 < rows["int8"]["arm64"][0]["vs_host_max_rel"]
    assert "## Parity on ARM64" in (out / "report.md").read_text()
    assert "parity on ARM64" in result.stdout and "timed on" in result.stdout


def test_convert_checks_each_file_on_arm64_too(engine, tmp_path):
    """`mvdeploy convert --arch arm64` through the convert sequence: a second parity row per file, written
    into its .parity.json (a toy model, so that the conversion costs seconds)."""
    from torch import nn

    from mobilevit_deploy import pipeline
    from mobilevit_deploy.parity import parity_path

    toy = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    run = pipeline.convert_model(toy.eval(), "tflite", "fp32", tmp_path, image_size=32, arm_cpus=arm_cpus("arm64"))
    (result,) = run.results
    assert result.report.passed, result.report.failures
    (row,) = json.loads(parity_path(result.artifact.path).read_text())["arm64"]
    assert row["machine"] == "aarch64" and row["failures"] == [] and row["images"] == len(run.inputs.images)
    assert row["metrics"]["max_rel"] < 1e-5 and row["vs_host"]["max_rel"] < 1e-5, row
