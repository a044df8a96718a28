"""Checkpoint loading: safetensors and state dicts, strict key and shape checks, corrupt files."""
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mobilevit_deploy.errors import WeightMismatchError, WeightsError
from mobilevit_deploy.models.weights import load_weights


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_round_trip_safetensors_and_torch(tmp_path):
    src, dst = _model(), nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    load_weights(dst, tmp_path / "w.safetensors", "toy")
    assert torch.equal(dst[0].weight, src[0].weight)
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "w.pt")
    dst2 = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    load_weights(dst2, tmp_path / "w.pt", "toy")
    assert torch.equal(dst2[0].bias, src[0].bias)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    state = _model().state_dict()
    state.pop("0.bias")
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(5, 4)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightMismatchError) as e:
        load_weights(_model(), tmp_path / "w.pt", "toy")
    msg = str(e.value)
    assert "missing keys: 0.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "0.weight (5, 4) vs (3, 4)" in msg


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(_model(), tmp_path / "nope.pt", "toy")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(_model(), tmp_path / "bad.safetensors", "toy")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"w": nn.Linear(2, 2)}, tmp_path / "module.pt")    # a pickled module, not tensors
    with pytest.raises(WeightsError):
        load_weights(_model(), tmp_path / "module.pt", "toy")
