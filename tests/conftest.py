"""What every test file shares: the real CLI in a subprocess, one torch thread, converted files.

One torch thread for the whole session: on this 2-core machine the tests run in two pytest-xdist
workers, and tiny tensors run several times faster on one intra-op thread than on two contending ones.
Quantization already runs on one thread (quantization/cells.py), so no figure depends on this.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))      # `from toys import ...` in every test file

from warm_cli import cli_command, stop_server, warm_server  # noqa: E402

# Two xdist workers on two cores: every engine (runners.base.engine_threads) and every CLI subprocess's
# PyTorch on one thread. Two-thread pools in both workers wait for each other by spinning: measured on
# `mvdeploy check` of swin_micro's ExecuTorch int8 file beside one busy core, 65 s of CPU at 2 threads,
# 40 s at 1. Tests that are about threads pass them explicitly.
os.environ.setdefault("MVDEPLOY_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_cli(*args, env: dict | None = None, cwd=None, timeout: int = 600,
            tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    """The real `mvdeploy` in a subprocess: exit codes and stderr exactly as a user sees them.
    `env`: extra variables; `tmpdir`: the run's TMPDIR."""
    env = {**os.environ, **(env or {})}
    env.pop("MVDEPLOY_VERBOSE", None)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    server = warm_server()
    if server.serves(env):              # a fork of an interpreter that has imported the CLI (tests/warm_cli.py)
        return server.run(list(args), env, cwd, timeout)
    return run_fresh(*args, env=env, cwd=cwd, timeout=timeout)


def run_fresh(*args, env: dict | None = None, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m mobilevit_deploy.cli` in a new interpreter."""
    return subprocess.run(cli_command(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(autouse=True, scope="session")
def _warm_cli_stops():
    yield
    stop_server()


# Test files whose cases are spread over both xdist workers one by one; every other file runs whole on one
# worker (`make test`: -n 2), so its module-scoped fixtures are built once. (xdist's own --dist loadgroup
# does not group here: with pytest 9 its nodeid suffix has no effect, so the scheduler below does it.)
SPREAD = {"test_matrix"}
# Test files that convert nothing and start no process: the `unit` tier (`make test-unit`, under 2 minutes).
UNIT = {"test_compare", "test_data", "test_fusion", "test_weights", "test_models"}
# The order work is handed to the two workers: longest first, so that no long file starts last while the
# other worker idles (measured on this 2-core machine: the matrix's ExecuTorch and int8 cases take minutes,
# then these files, longest first; every other file follows in collection order).
# test_integrity (the matrix's TFLite fp16/int8 and ExecuTorch int8 files) comes after the first long files,
# so that the matrix has made most of them.
LONGEST_FIRST = ["test_matrix", "test_wheel", "test_bundle", "test_hardening", "test_scale", "test_integrity", "test_budget", "test_arm64", "test_tflite",
                 "test_cli", "test_debug", "test_coreml", "test_hf_folder", "test_foreign_weights", "test_executorch",
                 "test_diagnose", "test_mil"]
# Handed out after every other file: tests that read a file another test converts (waiting on its lock idles a core).
LAST = ["test_executorch_report"]


def _module_of(nodeid: str) -> str:
    return Path(nodeid.split("::")[0]).stem


def _handed_out(item) -> tuple:
    module = _module_of(item.nodeid)
    rank = (LONGEST_FIRST.index(module) if module in LONGEST_FIRST else
            len(LONGEST_FIRST) + 1 + LAST.index(module) if module in LAST else len(LONGEST_FIRST))
    case = item.callspec.id if hasattr(item, "callspec") else ""
    heavy = ("executorch" in case) + ("int8" in case) + ("swin" in case)      # within the matrix
    return rank, -heavy if module in SPREAD else 0


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=_handed_out)               # stable: each file's own order is kept
    for item in items:
        if _module_of(item.nodeid) in UNIT:
            item.add_marker(pytest.mark.unit)


def pytest_xdist_make_scheduler(config, log):
    """Work units for the workers: a whole file, or one case of a SPREAD file; handed out in collection
    order (longest first, above)."""
    from xdist.scheduler import LoadScopeScheduling

    class FileOrCase(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if _module_of(nodeid) in SPREAD else nodeid.split("::")[0]

    return FileOrCase(config, log)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def run(tmp_path):
    """The CLI with a private TMPDIR that must be empty again when the run is over."""
    tmpdir = tmp_path / "system-tmp"
    tmpdir.mkdir()

    def call(*args, **kw):
        result = run_cli(*args, tmpdir=tmpdir, **kw)
        assert sorted(p.name for p in tmpdir.iterdir()) == [], "left in the temporary folder"
        return result
    return call


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- converted files, shared by every test file and both xdist workers ------------------------------

CONVERTED_SIZE = 64          # the side the digits reference checkpoints were trained at
REFERENCE = ("mobilevit_xxs", "swin_micro")   # models converted with their reference weights


@dataclass(frozen=True)
class ModelFile:
    """A file `pipeline.convert` wrote and checked, with its .parity.json. Shared: copy it before changing it."""

    path: Path
    parity: dict

    @property
    def passed(self) -> bool:
        return self.parity["passed"] is True


def _convert_for_tests(name: str, target_name: str, precision, converter: str | None, out: Path) -> Path:
    """The conversion the matrix proves: the reference weights (random ones for other models) at 64x64,
    64 calibration images (the checkpoint's train split, else synthetic), parity on 4 synthetic + 32 real."""
    from mobilevit_deploy import pipeline
    from mobilevit_deploy.calibration import calibration_for
    from mobilevit_deploy.spec import Precision
    from mobilevit_deploy.targets import get_target

    target = get_target(target_name)
    prepared = pipeline.prepare_model(name, weights=None if name in REFERENCE else "random",
                                      image_size=CONVERTED_SIZE)
    calibration = None
    if target.needs_calibration(precision):
        calibration = calibration_for(prepared, None if prepared.reference is not None else "synthetic", samples=64)
    options = target.options(ios=18) if precision is Precision.int4 else None
    result = pipeline.convert(prepared, target, prepared.spec(precision, converter=converter, options=options), out,
                              calibration=calibration, inputs=pipeline.parity_inputs(prepared, synthetic=4, real=32))
    return result.artifact.path


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """model_file(model, target, precision, converter=None) -> ModelFile: each file is made once per run,
    by whichever worker asks first (a file lock), and read by every other test that asks for it."""
    from filelock import FileLock

    from mobilevit_deploy.parity import parity_path
    from mobilevit_deploy.targets import get_target

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "converted"
    root.mkdir(exist_ok=True)

    def get(name: str, target_name: str, precision, converter: str | None = None) -> ModelFile:
        reason = get_target(target_name).unavailable_reason()
        if reason:
            pytest.skip(reason)
        key = f"{name}-{target_name}-{precision.value}-{converter or 'default'}"
        done = root / f"{key}.json"
        with FileLock(str(root / f"{key}.lock")):
            if not done.exists():
                path = _convert_for_tests(name, target_name, precision, converter, root / key)
                done.write_text(json.dumps({"path": str(path)}))
        path = Path(json.loads(done.read_text())["path"])
        return ModelFile(path, json.loads(parity_path(path).read_text()))

    return get
