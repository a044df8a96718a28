"""The Python API with a user's own nn.Module: what it accepts, and one clear error for what it cannot take."""
import pytest
import torch
from torch import nn

import mobilevit_deploy as mvd
from mobilevit_deploy.errors import InvalidValueError
from mobilevit_deploy.pipeline import prepare_module


class Pair(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x.amax((2, 3))


def test_a_custom_module_is_prepared_from_a_probe():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))
    prepared = prepare_module(net, 32, name="mine")
    assert (prepared.name, prepared.num_classes, prepared.image_size, prepared.trained) == ("mine", 7, 32, True)
    assert prepared.reference is None and prepared.preprocess.crop == 32


@pytest.mark.parametrize("module,size,needle", [
    (Pair(), 32, "must return one tensor"),
    (nn.Linear(4, 2), 32, "does not take a [1, 3, 32, 32] image batch"),
    ("not a module", 32, "expected a torch.nn.Module"),
    (nn.Identity(), 0, "image_size must be"),
])
def test_what_a_custom_module_cannot_be(module, size, needle):
    with pytest.raises(InvalidValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        prepare_module(module, size)


def test_convert_needs_an_image_size_for_a_custom_module(tmp_path):
    with pytest.raises(InvalidValueError, match="image_size"):
        mvd.convert(nn.Identity(), target="onnx", out=tmp_path)


def test_a_custom_module_converts_with_parity(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4))
    result = mvd.convert(net, target="onnx", image_size=48, out=tmp_path, name="small")
    assert result.artifact.path.name == "small-fp32.onnx"
    assert result.report.passed and result.report.metrics.max_rel < 5e-6
    assert result.report.weights == "user module small"
