"""Reports at scale: cells and evaluation shards as tasks (mobilevit_deploy/scale.py, quantization/cells.py).

The executors' contract on tiny functions; artifacts travelling as bytes and through a store; the real CLI
in-process (no Ray import) and on a local Ray of two workers (the same figures); a cell that raises, a
worker that dies; and a two-node Ray cluster on 127.0.0.1 reached with --ray-address.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mobilevit_deploy.errors import ConversionError, InvalidValueError
from mobilevit_deploy.host import host
from mobilevit_deploy.parity import parity_path
from mobilevit_deploy.quantization.cells import Parcel, pack
from conftest import run_cli
from mobilevit_deploy.quantization.schedule import shards
from mobilevit_deploy.reports import headline_rows
from mobilevit_deploy.scale import Failed, InProcessExecutor, RayExecutor

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "plugins" / "flaky_target.py"
RAY = Path(sys.executable).parent / "ray"
LATENCY = 5                                  # headline columns that are timings, not figures


def mvdeploy(*args, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env, timeout=timeout)


def _figures(report_json: Path) -> list[tuple]:
    """Every headline figure as printed, latency left out (it is a measurement of this moment)."""
    from mobilevit_deploy.quantization.evaluate import VariantResult
    from mobilevit_deploy.quantization.report import ModelReport, Report

    saved = json.loads(report_json.read_text())
    models = []
    for m in saved["models"]:
        rows = [VariantResult(**r) for r in m["rows"]]
        models.append(ModelReport(m["model"], m["weights"], m["image_size"], m["eval"]["source"], m["eval"]["images"],
                                  m["eval"]["skipped_unreadable"], m["calibration"]["source"],
                                  m["calibration"]["images"], m["torch_fp32"]["accuracy"], (0.0, 0.0), rows))
    return [row[:LATENCY] + row[LATENCY + 1:] for row in headline_rows(Report("", {}, models))]


def _layer_table(report_json: Path) -> list:
    saved = json.loads(report_json.read_text())
    return [(m["model"], m["int8_layers"] and [(l["module"], f"{l['sqnr_db']:.1f}", f"{100 * l['noise_added']:.3f}")
                                             for l in m["int8_layers"]["layers"]],
             m["int8_layers"] and f"{m['int8_layers']['logits_sqnr_db']:.1f}") for m in saved["models"]]


# -- the pieces ---------------------------------------------------------------------------------------

def test_shards_cover_every_image_once_in_order():
    assert shards(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shards(8, 4) == [(0, 4), (4, 8)] and shards(3, 256) == [(0, 3)] and shards(0, 4) == []
    with pytest.raises(InvalidValueError, match="--shard-size"):
        shards(10, 0)


def _double(x):
    return 2 * x


def _refuse(x):
    raise ConversionError(f"op not supported for {x}")


def _crash(x):
    raise RuntimeError(f"boom {x}\nsecond line")


def test_in_process_executor_runs_dependencies_and_turns_errors_into_lines():
    with InProcessExecutor() as executor:
        a = executor.submit(_double, 3)
        b = executor.submit(_double, a)                         # waits for a
        refused = executor.submit(_refuse, executor.put("gelu"))
        crashed = executor.submit(_crash, 1)
        downstream = executor.submit(_double, crashed)          # its input failed: so does it, with that line
        outcomes = list(executor.completed([b, a, refused, crashed, downstream]))
    assert [h for h, _ in outcomes] == [b, a, refused, crashed, downstream]        # submission order here
    assert [o for _, o in outcomes] == [12, 6, Failed("op not supported for gelu"), Failed("RuntimeError: boom 1"),
                                        Failed("RuntimeError: boom 1")]
    assert executor.describe()["kind"] == "in-process" and executor.threads is None


def test_ray_executor_needs_exactly_one_of_workers_and_address():
    with pytest.raises(InvalidValueError, match="exactly one"):
        RayExecutor(workers=2, address="127.0.0.1:6379")
    with pytest.raises(InvalidValueError, match="exactly one"):
        RayExecutor()
    with pytest.raises(InvalidValueError, match="at least 1"):
        RayExecutor(workers=0)
    local = RayExecutor(workers=2)
    assert local.threads == max(1, (os.cpu_count() or 1) // 2) and local.describe()["description"] == "local Ray, 2 workers"
    assert RayExecutor(address="127.0.0.1:6379").describe()["kind"] == "ray-cluster"   # nothing starts before `with`


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_an_artifact_travels_as_bytes_or_through_a_store(tmp_path, kind):
    made = tmp_path / "worker"
    if kind == "file":
        path = made / "failed" / "m-int8.tflite"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x00tflite bytes")
    else:                                                   # a .mlpackage is a folder
        path = made / "m-fp16.mlpackage"
        (path / "Data" / "weights").mkdir(parents=True)
        (path / "Manifest.json").write_text("{}")
        (path / "Data" / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 3)
    parity_path(path).write_text(json.dumps({"artifact": str(path), "passed": True}))

    def contents(p: Path) -> dict:
        return ({"": p.read_bytes()} if p.is_file() else
                {f.relative_to(p).as_posix(): f.read_bytes() for f in p.rglob("*") if f.is_file()})

    as_bytes = pack(path, made, None)
    assert as_bytes.store is None and as_bytes.size_bytes == sum(map(len, contents(path).values()))
    via_store = pack(path, made, tmp_path / "store")           # copied into the store, then by reference
    assert via_store.files == () and (tmp_path / "store" / via_store.relpath).exists()
    for parcel, out in ((as_bytes, tmp_path / "report-a"), (via_store, tmp_path / "report-b")):
        placed = parcel.place(out)
        assert placed == out / path.relative_to(made) and contents(placed) == contents(path)
        assert json.loads(parity_path(placed).read_text())["artifact"] == str(placed)   # names where it is now
    assert as_bytes.open(tmp_path / "scratch").name == path.name
    assert Parcel("m.tflite", store=str(tmp_path / "store")).place(tmp_path / "store") == tmp_path / "store" / "m.tflite"


def test_a_failed_evaluation_shard_fails_its_cell_only(tmp_path, monkeypatch):
    """In-process: the last shard of the ONNX file raises; its cell is reported with the shard named,
    the PyTorch reference and the other figures are still there."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.quantization import schedule as report_module

    real = report_module.evaluate_shard

    def flaky(cell, shard, preprocess, threads):
        if len(shard) < 20:
            raise RuntimeError("engine fell over")
        return real(cell, shard, preprocess, threads)

    monkeypatch.setattr(report_module, "evaluate_shard", flaky)
    progress = []
    m = report_module.measure_model(pipeline.prepare_model("mobilevit_xxs"), ["onnx"], [pipeline.Precision.fp32],
                                    tmp_path / "a", eval_limit=50, repeats=2, shard_size=20,
                                    on_progress=lambda done, total: progress.append((done, total)))
    assert m.rows == [] and m.torch_accuracy is not None
    assert m.failures == ["onnx fp32: evaluation failed (shard 3): RuntimeError: engine fell over"]
    # one bar: 3 reference shards + the cell + its 3 shards, then 2 timings (PyTorch, the cell)
    assert progress[-1] == (9, 9) and [d for d, _ in progress] == list(range(1, 10))


# -- the real CLI ------------------------------------------------------------------------------------------

def _plugin_env(tmp_path: Path, kill: bool = False) -> dict:
    """PYTHONPATH with the flaky test target registered as an entry point (seen by Ray's workers too)."""
    site = tmp_path / "site"
    info = site / "mvdeploy_test_flaky-0.dist-info"
    info.mkdir(parents=True)
    shutil.copy(PLUGIN, site / PLUGIN.name)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mvdeploy-test-flaky\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[mvdeploy.targets]\nflaky = flaky_target:TARGET\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "MVDEPLOY_TEST_ATTEMPTS": str(tmp_path / "attempts.txt"), "MVDEPLOY_TEST_KILL": "1" if kill else "0"}


def _attempts(tmp_path: Path) -> dict:
    lines = (tmp_path / "attempts.txt").read_text().split("\n")
    return {p: sum(1 for line in lines if line.startswith(p + " ")) for p in ("fp32", "fp16")}


NO_RAY = ("import runpy, sys\n"
          "sys.argv = ['mvdeploy', *sys.argv[1:]]\n"
          "try:\n    runpy.run_module('mobilevit_deploy.cli', run_name='__main__')\n"
          "except SystemExit as e:\n    code = e.code\n"
          "print('RAY IMPORTED' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO RAY', code)\n")


def test_help_and_an_in_process_report_never_import_ray_and_a_failed_cell_is_reported(tmp_path):
    """`mvdeploy --help` and a report without --workers/--ray-address: no `ray` in sys.modules. The report
    has a cell whose conversion raises: it is listed as failed (no retry here), the others are measured."""
    helped = subprocess.run([sys.executable, "-c", NO_RAY, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.stdout.strip().endswith("NO RAY 0"), helped.stdout[-500:] + helped.stderr[-500:]
    out = tmp_path / "report"
    ran = subprocess.run([sys.executable, "-c", NO_RAY, "report", "mobilevit_xxs", "--targets", "onnx,flaky",
                          "--precisions", "fp32,fp16", "--eval-limit", "30", "--repeats", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, **_plugin_env(tmp_path)})
    assert ran.stdout.strip().endswith("NO RAY 1"), ran.stdout[-2000:] + ran.stderr[-2000:]   # a failed cell: exit 1
    saved = json.loads((out / "report.json").read_text())                                      # after writing it
    (m,) = saved["models"]
    assert [(r["target"], r["precision"]) for r in m["rows"]] == [("onnx", "fp32"), ("flaky", "fp32")]
    assert m["failures"] == ["flaky fp16: conversion failed: RuntimeError: injected conversion failure"]
    tasks = saved["executor"].pop("tasks")
    assert saved["executor"] == {"kind": "in-process", "description": "in-process", "workers": 1, "address": None,
                                 "ray": None, "shard_size": 256, "artifact_store": None,
                                 "latency_host": host().describe(),
                                 "latency_int8_caveat": host().int8_caveat()}
    # the reference's shard, 3 conversions, a shard per file; flaky fp16's conversion and its shard failed
    assert {k: tasks[k] for k in ("tasks", "failed", "retried", "image_evaluations")} == {
        "tasks": 7, "failed": 2, "retried": 0, "image_evaluations": 90} and tasks["images_per_second"] > 0
    assert _attempts(tmp_path) == {"fp32": 1, "fp16": 1}
    assert "failed: mobilevit_xxs flaky fp16: conversion failed: RuntimeError: injected conversion failure" in ran.stderr
    assert "## Failed" in (out / "report.md").read_text() and "ran on: in-process" in ran.stdout


def test_ray_options_are_validated_before_any_work(tmp_path):
    both = mvdeploy("report", "--workers", "2", "--out", tmp_path / "a", env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert both.returncode == 1 and "pass one of them" in both.stderr          # RAY_ADDRESS counts as --ray-address
    store = mvdeploy("report", "--artifact-store", tmp_path / "s", "--out", tmp_path / "b")
    assert store.returncode == 1 and "--artifact-store is where Ray workers put" in store.stderr
    zero = mvdeploy("report", "--workers", "0", "--out", tmp_path / "c")
    assert zero.returncode == 1 and "--workers must be at least 1" in zero.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "s").exists()


def test_on_two_workers_a_failed_cell_is_retried_once_and_a_killed_worker_is_survived(tmp_path):
    """Local Ray, 2 workers, evaluating a listing file of 30 digit PNGs and a broken file in shards of 16 that the
    workers read themselves: flaky fp16 raises (retried once by Ray, then reported with its error line); flaky
    fp32's worker dies on the first attempt (Ray runs it again and it is measured). Every figure is the one this
    process computes on the same listing in one shard; report.json counts the tasks, failed and retried."""
    from toys import digit_pngs

    from mobilevit_deploy.pipeline import prepare_model
    from mobilevit_deploy.quantization.cells import evaluate_shard, reference_shard, reused_cell
    from mobilevit_deploy.quantization.evaluate import accuracy, evaluate_logits, evaluation_set
    from mobilevit_deploy.spec import Precision

    listing = tmp_path / "digits" / "eval.csv"
    rows = digit_pngs(listing.parent, 30, broken=1)
    listing.write_text("".join(f"{path},{digit}\n" for path, digit in rows))
    out = tmp_path / "report"
    ran = mvdeploy("report", "mobilevit_xxs", "--targets", "onnx,flaky", "--precisions", "fp32,fp16", "--eval-data",
                   listing, "--shard-size", "16", "--repeats", "2", "--out", out, "--workers", "2",
                   env=_plugin_env(tmp_path, kill=True))
    assert ran.returncode == 1, ran.stderr[-3000:]                 # flaky fp16 failed; the report is written
    saved = json.loads((out / "report.json").read_text())
    (m,) = saved["models"]
    assert [(r["target"], r["precision"]) for r in m["rows"]] == [("onnx", "fp32"), ("flaky", "fp32")]
    assert m["failures"] == ["flaky fp16: conversion failed: RuntimeError: injected conversion failure"]
    assert _attempts(tmp_path) == {"fp32": 2, "fp16": 2}
    assert m["eval"] == {"source": str(listing), "images": 30, "shards": 2, "skipped_unreadable": 1,
                         "unreadable": [str(listing.parent / "3" / "broken0.png")]}
    # 2 reference shards, 3 conversions, 2 shards per file; 31 listed images (the broken one too) per pass
    tasks = saved["executor"]["tasks"]
    assert {k: tasks[k] for k in ("tasks", "failed", "retried", "image_evaluations")} == {
        "tasks": 11, "failed": 3, "retried": 2, "image_evaluations": 93}
    prepared = prepare_model("mobilevit_xxs")    # here, in one shard: the figures the workers' shards gave
    whole = evaluation_set(prepared, listing, None).images
    reference = reference_shard(prepared, whole)
    assert m["torch_fp32"]["accuracy"] == accuracy(reference.logits, reference.labels) >= 0.9
    kept = out / "artifacts" / "mobilevit_xxs" / "mobilevit_xxs-fp32.onnx"
    here = evaluate_shard(reused_cell(kept, "onnx", Precision.fp32, kept.parent, kept.parent), whole,
                          prepared.preprocess, None)
    figures = evaluate_logits(here.logits, here.labels, reference.logits, m["torch_fp32"]["accuracy"])
    assert {k: m["rows"][0][k] for k in figures} == figures
    assert all(r["accuracy"] == m["torch_fp32"]["accuracy"] for r in m["rows"])
    assert saved["executor"]["description"] == "local Ray, 2 workers" and saved["executor"]["ray"] == "2.60.0"
    assert (out / "artifacts" / "mobilevit_xxs" / "mobilevit_xxs-fp32.flaky.onnx").is_file()
    assert "ran on: local Ray, 2 workers" in ran.stdout and "Ran on: local Ray, 2 workers (ray 2.60.0)" in (
        out / "report.md").read_text()


def _same_figures(tmp_path: Path, models: str) -> None:
    common = ["report", models, "--targets", "tflite", "--precisions", "fp32,int8", "--shard-size", "100",
              "--repeats", "3"]
    here = mvdeploy(*common, "--out", tmp_path / "here", timeout=1800)
    assert here.returncode == 0, here.stderr[-3000:]
    ray = mvdeploy(*common, "--out", tmp_path / "ray", "--workers", "2", timeout=1800)
    assert ray.returncode == 0, ray.stderr[-3000:]
    a, b = tmp_path / "here" / "report.json", tmp_path / "ray" / "report.json"
    assert _figures(a) == _figures(b) and len(_figures(a)) == 3 * len(models.split(","))
    assert _layer_table(a) == _layer_table(b) and all(t[1] for t in _layer_table(a))
    saved = [json.loads(p.read_text()) for p in (a, b)]
    assert [m["eval"]["images"] for m in saved[0]["models"]] == [450] * len(models.split(","))   # the digits test split
    assert [x["executor"]["kind"] for x in saved] == ["in-process", "local-ray"]


# slow: two int8 reports with their layer tables take ~4 min; the default run keeps the retry, failed-cell
# and two-node cluster cases, which compare every row's accuracy with PyTorch's.
@pytest.mark.slow
def test_the_same_figures_in_process_and_on_two_workers(tmp_path):
    """mobilevit_xxs, TFLite fp32 + int8, all 450 held-out digits in shards of 100: every printed figure and the
    per-layer int8 table are the same whether one process or two Ray workers computed them."""
    _same_figures(tmp_path, "mobilevit_xxs")


@pytest.mark.slow
def test_the_same_figures_for_both_reference_models(tmp_path):
    _same_figures(tmp_path, "mobilevit_xxs,swin_micro")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Two loopback addresses, one per node. Not 127.0.0.1: Ray rewrites "127.0.0.1" in an address to the
# machine's interface address, and every packet of this test is to stay on the loopback range.
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
# Ray clusters started with `ray start` take a token; this test's nodes and drivers share a fresh one.
CLUSTER_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _ray_node(ip: str, *args) -> subprocess.Popen:
    """`ray start --block` in a session of its own: stopping it is a signal to that process group, which
    ends exactly this node's processes (`ray stop` would end every Ray on the machine, others' too)."""
    ports = ["--node-manager-port", _free_port(), "--object-manager-port", _free_port(),
             "--dashboard-agent-listen-port", _free_port(), "--dashboard-agent-grpc-port", _free_port(),
             "--runtime-env-agent-port", _free_port(), "--metrics-export-port", _free_port(),
             "--min-worker-port", 0, "--max-worker-port", 0]
    command = [RAY, "start", "--block", "--num-cpus", 1, "--object-store-memory", 200 * 2**20,
               "--node-ip-address", ip, "--disable-usage-stats", *ports, *args]
    return subprocess.Popen(list(map(str, command)), env={**os.environ, **CLUSTER_ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(node: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(wait)
            deadline = time.time() + wait             # and every process of its group
            while time.time() < deadline:
                os.killpg(node.pid, 0)
                time.sleep(0.5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass


def _wait_for_nodes(address: str, count: int, timeout: float = 90) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **CLUSTER_ENV})
        if seen.stdout.strip() == str(count):
            return
        time.sleep(2)
    pytest.fail(f"the Ray cluster at {address} did not reach {count} nodes")


def test_a_report_on_a_two_node_ray_cluster(tmp_path):
    """`ray start --head` and a second `ray start --address`, both on this machine's loopback, one CPU each; the report goes
    there with --ray-address, its files through --artifact-store; both nodes are stopped at the end."""
    port = _free_port()
    address = f"{HEAD_IP}:{port}"
    logs = Path(tempfile.mkdtemp(prefix="mvd-ray-"))         # short: Ray's socket paths must fit in 107 bytes
    nodes = [_ray_node(HEAD_IP, "--head", "--port", port, "--include-dashboard", "false", "--ray-client-server-port",
                       _free_port(), "--temp-dir", logs)]
    try:
        _wait_for_nodes(address, 1)
        nodes.append(_ray_node(WORKER_IP, "--address", address))
        _wait_for_nodes(address, 2)
        out, store = tmp_path / "report", tmp_path / "store"
        ran = mvdeploy("report", "mobilevit_xxs", "--targets", "onnx", "--precisions", "fp32", "--eval-limit", "40",
                       "--shard-size", "10", "--repeats", "2", "--out", out, "--ray-address", address,
                       "--artifact-store", store, env=CLUSTER_ENV)
        assert ran.returncode == 0, ran.stderr[-3000:]
        saved = json.loads((out / "report.json").read_text())
        tasks = saved["executor"].pop("tasks")
        assert saved["executor"] == {"kind": "ray-cluster", "description": f"Ray cluster at {address}", "workers": None,
                                     "address": address, "ray": "2.60.0", "shard_size": 10,
                                     "artifact_store": str(store), "latency_host": host().describe(),
                                     "latency_int8_caveat": host().int8_caveat()}
        assert {k: tasks[k] for k in ("tasks", "failed", "retried", "image_evaluations")} == {
            "tasks": 9, "failed": 0, "retried": 0, "image_evaluations": 80}
        (row,) = saved["models"][0]["rows"]
        assert row["accuracy"] == saved["models"][0]["torch_fp32"]["accuracy"] and row["top1_agreement"] == 1.0
        assert row["sqnr_db"] > 90 and saved["models"][0]["eval"]["images"] == 40
        stored = store / "mobilevit_xxs" / "mobilevit_xxs-fp32.onnx"
        kept = out / "artifacts" / "mobilevit_xxs" / "mobilevit_xxs-fp32.onnx"
        assert stored.read_bytes() == kept.read_bytes() and parity_path(kept).is_file()
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(logs, ignore_errors=True)
