"""`mvdeploy report --targets executorch` on the reference model's .pte files (the matrix's, shared).

Its own file, handed out last (tests/conftest.py): it reads mobilevit_xxs's ExecuTorch files, which the
matrix (and test_budget, test_bundle) convert first; earlier, it waited up to 65 s on a file's lock while the
other worker converted it.
"""
import pytest

from mobilevit_deploy.spec import Precision
from mobilevit_deploy.targets import get_target

if get_target("executorch").unavailable_reason():
    pytest.skip(get_target("executorch").unavailable_reason(), allow_module_level=True)


def test_report_rows_for_executorch(cli, tmp_path, model_file):
    """`mvdeploy report --targets executorch`: size, latency at LiteRT's thread count (2), accuracy,
    agreement and SQNR for each .pte; mobilevit_xxs's int8 program keeps top-1 within 1 point of PyTorch fp32
    on 200 held-out digits (calibrated on the train split), and its per-layer table is measured in the file. The report reuses the matrix's checked files
    (conftest), as it reuses any checked file an earlier run left in its folder: converting a real model
    to ExecuTorch int8 again would take minutes, and report cells convert through the same sequence
    that the matrix proves (test_report.py covers a report's own conversions)."""
    import json
    import shutil

    from mobilevit_deploy.parity import parity_path

    out = tmp_path / "report"
    folder = out / "artifacts" / "mobilevit_xxs"
    folder.mkdir(parents=True)
    for precision in (Precision.fp32, Precision.int8):
        made = model_file("mobilevit_xxs", "executorch", precision)
        shutil.copy2(made.path, folder / made.path.name)
        shutil.copy2(parity_path(made.path), parity_path(folder / made.path.name))
    result = cli("report", "mobilevit_xxs", "--targets", "executorch", "--precisions", "fp32,int8",
                 "--eval-limit", "200", "--repeats", "5", "--out", out)
    assert result.returncode == 0, result.stderr
    (model,) = json.loads((out / "report.json").read_text())["models"]
    rows = {(r["target"], r["precision"]): r for r in model["rows"]}
    assert set(rows) == {("executorch", "fp32"), ("executorch", "int8")}, sorted(rows)
    for precision in ("fp32", "int8"):
        row = rows["executorch", precision]
        assert row["engine"].startswith("executorch") and row["artifact"].endswith(".pte") and row["parity_passed"]
        assert row["latency_ms_median"] > 0 and row["latency_ms_p90"] >= row["latency_ms_median"]
        assert row["size_bytes"] > 0 and row["top1_agreement"] > 0.98 and row["accuracy_delta"] >= -1.0
    assert rows["executorch", "fp32"]["sqnr_db"] > 90 and rows["executorch", "fp32"]["accuracy_delta"] == 0.0
    assert 15 < rows["executorch", "int8"]["sqnr_db"] < 90
    assert rows["executorch", "int8"]["size_ratio"] < 0.4
    text = (out / "report.md").read_text()
    assert "| mobilevit_xxs | executorch | int8 |" in text
    assert "## mobilevit_xxs executorch int8: the layers adding the most noise in the shipped file" in text
    (table,) = model["file_layers"]
    assert table["target"] == "executorch" and table["why"] is None and len(table["layers"]) > 100
    assert "what to ship" in result.stdout
