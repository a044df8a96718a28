"""Conv+BN folding: exact on a conv with and without bias, refuses training mode, counts pairs."""
import pytest
import torch
from torch import nn

from mobilevit_deploy.errors import FusionError
from mobilevit_deploy.fusion import fuse
from mobilevit_deploy.models.layers import ConvNormAct, FusedConvAct, fuse_conv_bn


def _randomize_bn(bn: nn.BatchNorm2d, seed: int = 0) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.1)
    return bn.eval()


@pytest.mark.parametrize("bias,groups", [(False, 1), (True, 1), (False, 4)])
def test_fuse_conv_bn_is_exact(bias, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=bias).eval()
    bn = _randomize_bn(nn.BatchNorm2d(8))
    x = torch.randn(2, 8, 9, 9)
    expected = bn(conv(x))
    got = fuse_conv_bn(conv, bn)(x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_fuse_refuses_training_mode():
    block = ConvNormAct(3, 4, 3)
    with pytest.raises(FusionError, match="training mode"):
        block.fuse()
    with pytest.raises(FusionError, match="training mode"):
        fuse(nn.Sequential(block))


def test_fuse_walker_replaces_every_block_and_keeps_activation():
    model = nn.Sequential(ConvNormAct(3, 4, 3), nn.Sequential(ConvNormAct(4, 4, 1, act=False)), nn.ReLU()).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomize_bn(m)
    result = fuse(model)
    assert result.fused_pairs == 2
    assert isinstance(result.model[0], FusedConvAct) and isinstance(result.model[0].act, nn.SiLU)
    assert isinstance(result.model[1][0].act, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    assert isinstance(model[0], ConvNormAct)            # the input model is untouched
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(result.model(x), model(x), atol=1e-5)


def test_negative_control_a_wrong_fold_is_caught():
    """The equivalence check above fails if the BN shift is dropped: the check has teeth."""
    conv = nn.Conv2d(4, 4, 1, bias=False).eval()
    bn = _randomize_bn(nn.BatchNorm2d(4))
    fused = fuse_conv_bn(conv, bn)
    with torch.no_grad():
        fused.bias.zero_()
    x = torch.randn(1, 4, 5, 5)
    assert (fused(x) - bn(conv(x))).abs().max() > 1e-2
