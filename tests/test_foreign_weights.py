"""Foreign checkpoints: Hugging Face MobileViT / Swin and torchvision Swin load into our models through
their rename tables, compute the same logits, and fail strictly (missing / unexpected / shapes listed).

The Hugging Face models are built from their config classes with random weights (no download). torchvision
cannot be installed beside the CPU torch here, so its table is tested by a round trip through a state dict
with torchvision's names and shapes, written from the table's inverse.
"""
import json

import pytest
import torch
from safetensors.torch import save_file

from mobilevit_deploy.errors import WeightMismatchError, WeightsError
from mobilevit_deploy.models import create_model
from mobilevit_deploy.models.sources import TORCHVISION_SWIN
from mobilevit_deploy.models.swin import relative_position_index
from mobilevit_deploy.models.weights import (CHANNEL_FLIP_NOTE, WEIGHTS_FORMATS, WeightsFormat, foreign_state_dict,
                                             load_weights)
from mobilevit_deploy.pipeline import prepare_model

from hf_models import randomize as _randomize, randomize_v2

transformers = pytest.importorskip("transformers")

RELATIVE_TOLERANCE = 1e-5       # max |ours - theirs| / max |theirs| on the logits
CLASSES = 10
SIZE = 128                      # MobileViT side for the logit checks: the same weights as at 256, a quarter of the work

# Hugging Face configs of apple/mobilevit-xx-small, -x-small, -small (config.json on the Hub).
HF_MOBILEVIT = {
    "mobilevit_xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0),
    "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": dict(hidden_sizes=[144, 192, 240], neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
}
# microsoft/swin-tiny-patch4-window7-224, and the same layout at swin_micro's sizes.
HF_SWIN = {
    "swin_tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin_micro": dict(embed_dim=48, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16], window_size=7),
}


def _hf_mobilevit(name: str):
    config = transformers.MobileViTConfig(num_labels=CLASSES, **HF_MOBILEVIT[name])
    return _randomize(transformers.MobileViTForImageClassification(config))


def _hf_swin(name: str):
    config = transformers.SwinConfig(num_labels=CLASSES, image_size=224, **HF_SWIN[name])
    return _randomize(transformers.SwinForImageClassification(config))


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.fixture(scope="module")
def hf_xxs(tmp_path_factory):
    """A random Hugging Face MobileViT xx-small, saved as save_pretrained writes it (a folder)."""
    model = _hf_mobilevit("mobilevit_xxs")
    folder = tmp_path_factory.mktemp("hf") / "mobilevit-xx-small"
    model.save_pretrained(folder)
    return model, folder


# ---------------------------------------------------------------------------------------------------
# Hugging Face: same logits as transformers
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(HF_MOBILEVIT))
def test_hf_mobilevit_matches_transformers_on_rgb(name, tmp_path):
    theirs = _hf_mobilevit(name)
    theirs.save_pretrained(tmp_path)
    ours = create_model(name, num_classes=CLASSES, image_size=SIZE)
    report = load_weights(ours, tmp_path / "model.safetensors", name)
    assert report.source == "hf" and CHANNEL_FLIP_NOTE in report.notes

    rgb = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(pixel_values=rgb.flip(1)).logits      # MobileViTImageProcessor feeds BGR
        got = ours(rgb)
    assert _relative_error(got, expected) < RELATIVE_TOLERANCE


def test_hf_mobilevit_trained_on_rgb_keeps_its_stem(hf_xxs, tmp_path):
    """A preprocessor_config.json beside the weights that turns the flip off is obeyed (and said)."""
    theirs, folder = hf_xxs
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_flip_channel_order": False}))
    ours = create_model("mobilevit_xxs", num_classes=CLASSES, image_size=SIZE)
    report = load_weights(ours, tmp_path, "mobilevit_xxs")              # the folder, as save_pretrained wrote it
    assert CHANNEL_FLIP_NOTE not in report.notes
    assert any("do_flip_channel_order false" in note for note in report.notes)
    rgb = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _relative_error(ours(rgb), theirs(pixel_values=rgb).logits) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name, layout", [
    ("swin_micro", "save_pretrained"),        # the Hub's names (attention.self.query, intermediate.dense)
    ("swin_micro", "state_dict"),             # transformers 5's in-memory names (attention.q_proj, mlp.fc1)
    ("swin_tiny", "save_pretrained"),
])
def test_hf_swin_matches_transformers(name, layout, tmp_path):
    theirs = _hf_swin(name)
    if layout == "save_pretrained":
        theirs.save_pretrained(tmp_path)
    else:
        save_file(theirs.state_dict(), str(tmp_path / "model.safetensors"))
    ours = create_model(name, num_classes=CLASSES)
    report = load_weights(ours, tmp_path / "model.safetensors", name)
    assert report.source == "hf" and CHANNEL_FLIP_NOTE not in report.notes

    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))   # normalized, as both take it
    with torch.no_grad():
        assert _relative_error(ours(image), theirs(pixel_values=image).logits) < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name, width", [
    ("mobilevitv2_050", 0.5),
    pytest.param("mobilevitv2_075", 0.75, marks=pytest.mark.slow),
    pytest.param("mobilevitv2_100", 1.0, marks=pytest.mark.slow),
])
def test_hf_mobilevitv2_matches_transformers_on_rgb(name, width, tmp_path):
    """transformers' MobileViTV2 (Apple's ml-cvnets layout) is an independent implementation of the
    paper: our model loaded from its state dict gives its logits (RGB for us, BGR for it)."""
    config = transformers.MobileViTV2Config(num_labels=CLASSES, width_multiplier=width, image_size=SIZE)
    theirs = randomize_v2(transformers.MobileViTV2ForImageClassification(config))
    theirs.save_pretrained(tmp_path)
    ours = create_model(name, num_classes=CLASSES, image_size=SIZE)
    report = load_weights(ours, tmp_path / "model.safetensors", name)
    assert report.source == "hf" and CHANNEL_FLIP_NOTE in report.notes

    rgb = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(pixel_values=rgb.flip(1)).logits
        got = ours(rgb)
        unflipped = theirs(pixel_values=rgb).logits
    assert _relative_error(got, expected) < RELATIVE_TOLERANCE
    assert _relative_error(got[0], got[1]) > 1e-2                          # the logits depend on the image
    assert _relative_error(got, unflipped) > 1e-3                          # the flip matters: the check can fail


def test_timm_named_mobilevitv2_state_dict_loads_strictly(tmp_path):
    """A state dict with timm's mobilevitv2_050 names and shapes (ours) loads; one missing tensor or one
    wrong shape is refused by name."""
    source = create_model("mobilevitv2_050", num_classes=CLASSES, seed=1)
    state = source.state_dict()
    save_file(state, str(tmp_path / "timm.safetensors"))
    ours = create_model("mobilevitv2_050", num_classes=CLASSES, seed=2)
    assert load_weights(ours, tmp_path / "timm.safetensors", "mobilevitv2_050").source == "timm"
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in state.items())

    broken = dict(state)
    broken.pop("stages.3.1.transformer.2.attn.qkv_proj.weight")
    broken["stages.4.1.norm.weight"] = torch.ones(7)
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightMismatchError) as error:
        load_weights(ours, tmp_path / "broken.safetensors", "mobilevitv2_050")
    assert "stages.3.1.transformer.2.attn.qkv_proj.weight" in str(error.value)
    assert "stages.4.1.norm.weight (7,)" in str(error.value)
    save_file(create_model("mobilevit_xxs", num_classes=CLASSES).state_dict(), str(tmp_path / "v1.safetensors"))
    with pytest.raises(WeightMismatchError):                               # a v1 checkpoint is not a v2 one
        load_weights(ours, tmp_path / "v1.safetensors", "mobilevitv2_050")


def test_prepare_model_carries_the_notes(hf_xxs):
    _, folder = hf_xxs
    prepared = prepare_model("mobilevit_xxs", weights=folder, num_classes=CLASSES, weights_format="hf")
    assert CHANNEL_FLIP_NOTE in prepared.notes and prepared.trained


# ---------------------------------------------------------------------------------------------------
# Files as people save them
# ---------------------------------------------------------------------------------------------------

def test_training_checkpoint_with_module_prefix_loads(hf_xxs, tmp_path):
    """A .bin holding {"epoch", "model_state_dict": {"module.<hf name>": ...}, "optimizer_state_dict"}."""
    theirs, _ = hf_xxs
    state = {"module." + k: v for k, v in theirs.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}},
               tmp_path / "checkpoint.bin")
    ours = create_model("mobilevit_xxs", num_classes=CLASSES, image_size=SIZE)
    report = load_weights(ours, tmp_path / "checkpoint.bin", "mobilevit_xxs")
    assert any("'model_state_dict'" in note for note in report.notes)
    assert any("'module.'" in note for note in report.notes)
    rgb = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert _relative_error(ours(rgb), theirs(pixel_values=rgb.flip(1)).logits) < RELATIVE_TOLERANCE


def test_timm_names_under_state_dict_with_model_prefix_load(tmp_path):
    source = create_model("swin_micro", num_classes=CLASSES, seed=1)
    state = {"model." + k: v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "lightning.ckpt")
    ours = create_model("swin_micro", num_classes=CLASSES, seed=2)
    assert load_weights(ours, tmp_path / "lightning.ckpt", "swin_micro").source == "timm"
    for key, value in source.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------------
# Strict: what does not fit is listed, in the checkpoint's own names
# ---------------------------------------------------------------------------------------------------

def test_missing_tensor_is_listed(hf_xxs, tmp_path):
    theirs, _ = hf_xxs
    state = dict(theirs.state_dict())
    removed = "mobilevit.encoder.layer.3.transformer.layer.1.attention.attention.key.weight"
    del state[removed]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightMismatchError) as e:
        load_weights(create_model("mobilevit_xxs", num_classes=CLASSES), tmp_path / "model.safetensors",
                     "mobilevit_xxs")
    assert e.value.missing == [removed]
    assert "Hugging Face MobileViT" in str(e.value) and removed in str(e.value)
    assert "query.weight" not in str(e.value)       # the other parts of the split qkv are not "unexpected"


def test_wrong_shape_is_listed(hf_xxs, tmp_path):
    theirs, _ = hf_xxs
    state = dict(theirs.state_dict())
    state["classifier.weight"] = torch.zeros(1000, 320)          # an ImageNet head on a 10-class model
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightMismatchError) as e:
        load_weights(create_model("mobilevit_xxs", num_classes=CLASSES), tmp_path / "model.safetensors",
                     "mobilevit_xxs")
    assert e.value.shapes == ["classifier.weight (1000, 320) vs (10, 320)"]
    assert not e.value.missing and not e.value.unexpected


def test_checkpoint_of_another_family_is_one_clear_line(tmp_path):
    save_file(_hf_swin("swin_micro").state_dict(), str(tmp_path / "swin.safetensors"))
    with pytest.raises(WeightsError, match="holds Hugging Face Swin weights; mobilevit_xxs is a mobilevit model"):
        load_weights(create_model("mobilevit_xxs", num_classes=CLASSES), tmp_path / "swin.safetensors", "mobilevit_xxs")


def test_undetectable_layout_and_bad_format_names(tmp_path):
    save_file({"backbone.conv.weight": torch.zeros(1)}, str(tmp_path / "odd.safetensors"))
    model = create_model("swin_micro", num_classes=CLASSES)
    with pytest.raises(WeightsError, match="cannot tell which layout odd.safetensors uses.*--weights-format"):
        load_weights(model, tmp_path / "odd.safetensors", "swin_micro")
    with pytest.raises(WeightsError, match="unknown weights format 'torchvison'.*did you mean 'torchvision'"):
        load_weights(model, tmp_path / "odd.safetensors", "swin_micro", weights_format="torchvison")
    with pytest.raises(WeightsError, match="no layout for mobilevit_xxs"):
        load_weights(create_model("mobilevit_xxs"), tmp_path / "odd.safetensors", "mobilevit_xxs",
                     weights_format=WeightsFormat.torchvision)
    assert WEIGHTS_FORMATS == ("hf", "timm", "torchvision")


def test_named_format_overrides_detection(tmp_path):
    """--weights-format hf on a torchvision file: the strict check speaks in Hugging Face names."""
    save_file(foreign_state_dict(create_model("swin_micro", num_classes=CLASSES), TORCHVISION_SWIN),
              str(tmp_path / "tv.safetensors"))
    with pytest.raises(WeightMismatchError, match=r"keys read as Hugging Face Swin.*swin\.embeddings"):
        load_weights(create_model("swin_micro", num_classes=CLASSES), tmp_path / "tv.safetensors", "swin_micro",
                     weights_format="hf")


# ---------------------------------------------------------------------------------------------------
# torchvision: a round trip through its names (not checked against a real torchvision checkpoint)
# ---------------------------------------------------------------------------------------------------

def _torchvision_state(model) -> dict[str, torch.Tensor]:
    """What torchvision's swin_* would save for `model`: the table's inverse, plus the persistent
    `relative_position_index` buffer torchvision stores (flattened) in every block."""
    state = foreign_state_dict(model, TORCHVISION_SWIN)
    for key in list(state):
        if key.endswith(".attn.relative_position_bias_table"):
            state[key.replace("_bias_table", "_index")] = relative_position_index(7).flatten()
    return state


def test_torchvision_swin_t_names_and_size():
    """Names and shapes as torchvision's swin_t, and its parameter count (28,288,354 in Swin_T_Weights.meta)."""
    state = _torchvision_state(create_model("swin_tiny"))
    expected = {
        "features.0.0.weight": (96, 3, 4, 4), "features.0.2.bias": (96,),
        "features.1.0.attn.qkv.weight": (288, 96), "features.1.1.attn.relative_position_bias_table": (169, 3),
        "features.1.1.attn.relative_position_index": (2401,), "features.2.reduction.weight": (192, 384),
        "features.4.norm.weight": (768,), "features.5.5.mlp.0.weight": (1536, 384),
        "features.7.1.mlp.3.bias": (768,), "norm.weight": (768,), "head.weight": (1000, 768),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(k.startswith(("layers.", "patch_embed.")) for k in state)
    params = sum(v.numel() for k, v in state.items() if not k.endswith("relative_position_index"))
    assert params == 28_288_354


@pytest.mark.parametrize("name", ["swin_micro"])      # swin_t's own names and shapes: the test above
def test_torchvision_round_trip(name, tmp_path):
    source = create_model(name, num_classes=CLASSES, seed=1)
    torch.save(_torchvision_state(source), tmp_path / "swin_t.pth")
    ours = create_model(name, num_classes=CLASSES, seed=2)
    report = load_weights(ours, tmp_path / "swin_t.pth", name)
    assert report.source == "torchvision"
    assert any("relative_position_index" in note for note in report.notes)
    for key, value in source.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(image), source(image))
