"""`mvdeploy bench`: interleaved timing of exported files (structure, not speed: speed is for benchmarks)."""
import json

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
    rows = bench([small, large, small], num_threads=1, rounds=3, per_round=2, warmup=1,
                 progress=lambda done, total: seen.append((done, total)))
    assert [r.file for r in rows] == [str(small), str(large), str(small)]
    assert rows[0].ratio == 1.0 and all(r.runs == 6 for r in rows)
    assert all(0 < r.p10_ms <= r.median_ms <= r.p90_ms for r in rows)
    assert rows[1].ratio == rows[1].median_ms / rows[0].median_ms
    assert seen == [(i, 9) for i in range(1, 10)]       # round-robin: one step per file per round
    assert "onnxruntime" in rows[0].engine and "1 threads" in rows[0].engine


def test_bench_cli_json_and_a_missing_file(cli, tmp_path):
    small = _toy(tmp_path, "small", 4)
    result = cli("bench", small, small, "--rounds", "2", "--repeats", "2", "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["threads"] == 1 and len(data["files"]) == 2 and data["files"][0]["ratio"] == 1.0
    missing = cli("bench", small, tmp_path / "nope.tflite")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "does not exist" in missing.stderr
