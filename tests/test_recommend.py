"""The report's "what to ship" line: a latency difference inside the measured spread is a tie, broken by size,
and the line names the host it was timed on and why that host's int8 speed is not a phone's."""
import pytest

from mobilevit_deploy.host import parse_cpuinfo
from mobilevit_deploy.quantization.evaluate import VariantResult
from mobilevit_deploy.quantization.recommend import recommend
from mobilevit_deploy.quantization.report import ModelReport

pytestmark = pytest.mark.unit


def _row(precision: str, size_mb: float, median: float, p90: float, delta: float = 0.0, passed: bool = True):
    return VariantResult("m", "tflite", precision, f"m-{precision}.tflite", "litert", int(size_mb * 1e6),
                         size_mb / 4.16, median, p90, None, 0.9, delta, 1.0, 0.99, 0.99, 30.0, passed)


def _model(*rows) -> ModelReport:
    return ModelReport("m", "reference", 64, "test", 100, 0, None, 0, 0.9, (1.0, 1.1), list(rows))


def test_a_latency_difference_inside_the_spread_is_a_tie_broken_by_size():
    """The case that misled before: fp32 0.93 ms (p90 3.35) over an int8 file 2.6x smaller at 1.04 ms."""
    fp32, int8 = _row("fp32", 4.16, 0.93, 3.35), _row("int8", 1.57, 1.04, 4.09)
    pick = recommend(_model(fp32, int8))
    assert pick.row is int8 and pick.tied_with == (fp32,)
    assert "ship tflite int8 (1.57 MB, 1.04 ms" in pick.line() and "a tie in latency" in pick.line()


def test_a_difference_outside_the_spread_is_not_a_tie():
    fp32, int8 = _row("fp32", 4.16, 0.93, 1.00), _row("int8", 1.57, 1.04, 1.10)
    pick = recommend(_model(fp32, int8))
    assert pick.row is fp32 and pick.tied_with == ()


def test_accuracy_and_parity_still_rule_out_a_variant():
    fp32, int8 = _row("fp32", 4.16, 0.93, 3.35), _row("int8", 1.57, 1.04, 4.09, delta=-2.0)
    assert recommend(_model(fp32, int8)).row is fp32
    fp32, int8 = _row("fp32", 4.16, 0.93, 3.35), _row("int8", 1.57, 1.04, 4.09, passed=False)
    assert recommend(_model(fp32, int8)).row is fp32


@pytest.mark.parametrize("machine,flags,says", [
    ("x86_64", "avx2 fma avx512f avx512_vnni", "x86-64 int8 kernels (with avx512_vnni), not the ARM dot-product"),
    ("x86_64", "avx2 fma", "no VNNI: int8 barely beats fp32 here"),
    ("aarch64", "asimd fphp asimdhp", "no dot-product instructions"),
    ("aarch64", "asimd asimddp i8mm", None),
])
def test_the_line_names_the_host_and_its_int8_caveat(machine, flags, says):
    host = parse_cpuinfo(f"model name : Some CPU\nflags : {flags}\nFeatures : {flags}\n", machine, 2)
    caveat = host.int8_caveat()
    assert (caveat is None) if says is None else (says in caveat), caveat
    line = recommend(_model(_row("fp32", 4.16, 0.93, 1.0)), host=host.describe(), caveat=caveat).line()
    assert f"timed on Some CPU ({machine}" in line
