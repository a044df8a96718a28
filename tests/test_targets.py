"""The target contract as a third party meets it: a target's own `tolerances` decide its parity, its
`requires` decide whether it is available, its `intermediates` whether debug reaches it, and the core
keys nothing by a target's name (so a plugin needs no core table patched)."""
import ast
import copy
from pathlib import Path

import pytest
import torch
from toys import SIZE, toy_net

from mobilevit_deploy import pipeline
from mobilevit_deploy.errors import ArtifactError, TargetUnavailableError
from mobilevit_deploy.models import model_config
from mobilevit_deploy.parity import Tolerance
from mobilevit_deploy.parity.compare import SQNR_CAP_DB
from mobilevit_deploy.spec import ExportSpec, Precision
from mobilevit_deploy.targets import BaseTarget, BrokenTarget, get_target, registry
from mvdeploy_targets.onnx import OnnxTarget

CORE = Path(__file__).resolve().parents[1] / "mobilevit_deploy"


class StrictOnnx(OnnxTarget):
    name = "strict-onnx"
    tolerances = {Precision.fp32: Tolerance(sqnr_db=SQNR_CAP_DB + 1)}     # impossible: SQNR is capped


class LooseOnnx(OnnxTarget):
    """A target that reads no weights (so no audit): its tolerance alone decides."""
    name = "loose-onnx"
    tolerances = {Precision.fp32: Tolerance(cosine_min=0.9)}
    weights_unread = "this test target reads no weights"

    def stored_tensors(self, artifact):
        return None


def prepared(model) -> pipeline.PreparedModel:
    preprocess = model_config("mobilevit_xxs").preprocess.with_size(SIZE)
    return pipeline.PreparedModel("toy", model, SIZE, 10, preprocess, "random")


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    target = get_target("onnx")
    if target.unavailable_reason():
        pytest.skip(target.unavailable_reason())
    model = toy_net()
    return model, target.convert(model, ExportSpec("toy", SIZE), tmp_path_factory.mktemp("targets") / "toy.onnx")


def test_every_registered_target_declares_a_tolerance_for_each_precision():
    for target in registry().values():
        if isinstance(target, BrokenTarget):
            continue
        missing = [p.value for p in target.precisions if p not in target.tolerances]
        assert not missing, f"{target.name} declares no tolerance for {missing}"


def test_a_third_party_targets_own_tolerance_decides_its_parity(toy_onnx):
    """The same file, the same model: only the target's declared tolerance differs, so the verdict
    must follow it (an impossible bound fails, the registered fp32 bound passes)."""
    model, artifact = toy_onnx
    exact = prepared(model)
    inputs = pipeline.parity_inputs(exact, synthetic=2, real=0)
    assert pipeline.check_artifact(artifact, get_target("onnx"), exact, inputs).passed
    strict = pipeline.check_artifact(artifact, StrictOnnx(), exact, inputs)
    assert not strict.passed and any(f.startswith("SQNR") for f in strict.failures), strict.failures
    assert strict.tolerance == StrictOnnx.tolerances[Precision.fp32]


def test_a_loose_third_party_tolerance_passes_what_fp32_fails(toy_onnx):
    """The other direction: against a 1%-changed model, onnx's fp32 bound fails and the loose one passes."""
    model, artifact = toy_onnx
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head.weight.mul_(1.01)
    moved = prepared(changed)
    inputs = pipeline.parity_inputs(moved, synthetic=2, real=0)
    assert not pipeline.check_artifact(artifact, get_target("onnx"), moved, inputs).passed
    loose = pipeline.check_artifact(artifact, LooseOnnx(), moved, inputs)
    assert loose.passed, loose.failures


def test_a_missing_precision_in_a_targets_tolerances_is_named():
    from mobilevit_deploy.errors import UnknownNameError
    from mobilevit_deploy.parity import tolerance_for

    with pytest.raises(UnknownNameError, match="strict-onnx-fp16.*strict-onnx-fp32"):
        tolerance_for(StrictOnnx(), Precision.fp16)


def test_requirements_are_declared_and_the_reason_derived():
    class Needy(OnnxTarget):
        name = "needy"
        requires = ("onnx", "mvdeploy_no_such_module")

    assert Needy().unavailable_reason() == ('needy needs: pip install "mvdeploy[needy]" '
                                            '(mvdeploy_no_such_module is not installed)')

    class Packaged(Needy):
        extra = "toolchain"

    assert 'pip install "mvdeploy[toolchain]"' in Packaged().unavailable_reason()
    with pytest.raises(TargetUnavailableError, match="mvdeploy_no_such_module"):
        Needy().validate(ExportSpec("toy", SIZE))
    assert BaseTarget().unavailable_reason() is None                        # nothing required, nothing missing


def test_debug_reaches_only_targets_that_declare_intermediates(toy_onnx, tmp_path):
    from mobilevit_deploy.debug.capture import engine_capture

    class Opaque(OnnxTarget):
        name = "opaque"
        intermediates = None

    _, artifact = toy_onnx
    with pytest.raises(ArtifactError, match="debug cannot expose intermediates of opaque files .it can for: .*onnx"):
        engine_capture(Opaque(), artifact, set(), tmp_path)
    with engine_capture(get_target("onnx"), artifact, set(), tmp_path) as capture:
        assert capture.tensors(pipeline.parity_inputs(prepared(toy_net()), synthetic=1, real=0).images[0])


def test_a_runner_without_intermediates_says_so():
    from mobilevit_deploy.runners.torch import TorchRunner

    with TorchRunner(toy_net(), input_shape=(1, 3, SIZE, SIZE)) as runner:
        with pytest.raises(ArtifactError, match="torch runner cannot return intermediate tensors"):
            runner.infer_intermediates(torch.zeros(1, 3, SIZE, SIZE).numpy(), ["stem"])


# -- the core names no target ---------------------------------------------------------------------

def target_keys(source: str, names: set[str]) -> list[str]:
    """Where `source` uses a target's name as a key or a branch: compared with (==, in), subscripted
    with, or a dict key. Help text, defaults and log names are not keys."""
    found = []
    for node in ast.walk(ast.parse(source)):
        candidates = []
        if isinstance(node, ast.Compare):
            candidates = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            candidates = [node.slice]
        elif isinstance(node, ast.Dict):
            candidates = [k for k in node.keys if k is not None]
        for c in candidates:
            parts = c.elts if isinstance(c, ast.Tuple) else [c]
            found += [f"line {node.lineno}: {p.value!r}" for p in parts
                      if isinstance(p, ast.Constant) and p.value in names]
    return found


def test_the_core_keys_nothing_by_target_name():
    names = {"onnx", "tflite", "coreml", "executorch"}
    # negative control: each shape of the old tables is caught
    assert len(target_keys('CAPTURES = {"onnx": 1}\nif "tflite" in targets: pass\n'
                           'TOLERANCES[("coreml", p)]\nif t == "executorch": pass\n', names)) == 4
    offenders = {str(path.relative_to(CORE)): hits for path in sorted(CORE.rglob("*.py"))
                 if (hits := target_keys(path.read_text(encoding="utf-8"), names))}
    assert offenders == {}


def test_a_target_written_for_the_old_contract_is_refused_where_it_is_defined():
    from mobilevit_deploy.targets import BaseTarget

    with pytest.raises(TypeError, match="_validate"):
        class OldStyle(BaseTarget):                   # noqa: F841  (its rules would be skipped silently)
            def _check(self, spec):
                raise AssertionError("never runs")

    class NewStyle(BaseTarget):                       # the negative control: the current hook is accepted
        def _validate(self, spec):
            pass
    assert NewStyle().name == ""
