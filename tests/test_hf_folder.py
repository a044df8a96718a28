"""A Hugging Face folder as `save_pretrained` writes it is a complete input: `--weights FOLDER` alone gives
the model (config.json), its classes (the head) and labels (id2label), its input size and preprocessing
(preprocessor_config.json); flags that contradict it are one line; another architecture is refused by name.

Models are built from transformers' config classes with trained-like statistics (`hf_models.trained_like`),
at 64x64, and converted to ONNX (the cheapest target). Folders are made once per module.
"""
import json

import numpy as np
import pytest
import torch

from mobilevit_deploy.errors import WeightsConflictError, WeightsError
from mobilevit_deploy.models import MODELS
from mobilevit_deploy.models.hf_config import ARCHITECTURES, describe_config
from mobilevit_deploy.models.hf_processor import read_processor
from mobilevit_deploy.models.weights import CHANNEL_FLIP_NOTE
from mobilevit_deploy.pipeline import convert_model, prepare_model

from hf_models import randomize_v2, trained_like

transformers = pytest.importorskip("transformers")

SIZE = 64
FP32_MAX_REL = 5e-6             # the onnx fp32 bound (parity/tolerances.py FP32)


def _labels(count: int) -> list[str]:
    return ["cat", "dog", "bird", "fish", "frog", "newt", "moth"][:count]


def _with_labels(count: int) -> dict:
    id2label = dict(enumerate(_labels(count)))
    return {"num_labels": count, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def _processor(kind: str, **settings):
    """transformers 5's PIL-backed processor when it has one (torchvision is not installed here)."""
    return (getattr(transformers, f"{kind}Pil", None) or getattr(transformers, kind))(**settings)


# name -> (what builds the transformers model, its processor, classes); each a non-default class count
FOLDERS = {
    "mobilevit_xxs": (lambda: trained_like(transformers.MobileViTForImageClassification(transformers.MobileViTConfig(
        hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0,
        image_size=SIZE, **_with_labels(5)))),
        lambda: _processor("MobileViTImageProcessor", size={"shortest_edge": 72}, crop_size={"height": SIZE, "width": SIZE})),
    "mobilevit_xs": (lambda: trained_like(transformers.MobileViTForImageClassification(transformers.MobileViTConfig(
        hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384], image_size=SIZE,
        **_with_labels(7)))),
        None),                        # an older feature extractor's file, written below
    "mobilevitv2_050": (lambda: randomize_v2(transformers.MobileViTV2ForImageClassification(transformers.MobileViTV2Config(
        width_multiplier=0.5, image_size=SIZE, **_with_labels(3)))),
        lambda: _processor("MobileViTImageProcessor", size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})),
    "swin_micro": (lambda: trained_like(transformers.SwinForImageClassification(transformers.SwinConfig(
        embed_dim=48, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16], window_size=2, image_size=SIZE,
        **_with_labels(6)))),
        # ViT's processor, as the Swin checkpoints name it: mean/std 0.5 (its default, not ImageNet's: ours)
        lambda: _processor("ViTImageProcessor", size={"height": SIZE, "width": SIZE}, resample=3)),
}
OLD_FEATURE_EXTRACTOR = {"crop_size": SIZE, "do_center_crop": True, "do_flip_channel_order": True, "do_resize": True,
                         "feature_extractor_type": "MobileViTFeatureExtractor", "resample": 3, "size": 72}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """name -> (its save_pretrained folder, the transformers model, its processor), made once."""
    made = {}

    def make(name):
        if name not in made:
            build, processor = FOLDERS[name]
            path = tmp_path_factory.mktemp("hf") / name
            model = build()
            model.save_pretrained(path)
            if processor is None:
                (path / "preprocessor_config.json").write_text(json.dumps(OLD_FEATURE_EXTRACTOR))
            else:
                processor().save_pretrained(path)
            made[name] = path, model
        return made[name]
    return make


# ---------------------------------------------------------------------------------------------------
# The whole flow: --weights FOLDER, no name, no --num-classes
# ---------------------------------------------------------------------------------------------------

def test_cli_converts_a_folder_with_nothing_else(cli, folder, tmp_path):
    path, _ = folder("mobilevit_xxs")
    result = cli("convert", "--target", "onnx", "--weights", path, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "mobilevit_xxs-fp32.onnx.parity.json").read_text())
    assert report["passed"] and report["metrics"]["max_rel"] < FP32_MAX_REL
    assert report["metrics"]["top1_agreement"] == 1.0
    labels_note = "labels from config.json's id2label: cat, dog, bird, fish, frog"
    assert result.stdout.count(labels_note) == 1                   # printed once
    assert any(labels_note in note for note in report["notes"])    # and recorded
    assert any(note.startswith("model mobilevit_xxs from") for note in report["notes"])
    assert any("center crop 64" in note for note in report["notes"]) and CHANNEL_FLIP_NOTE in report["notes"]


@pytest.mark.parametrize("name", ["mobilevit_xs", "mobilevitv2_050", "swin_micro"])
def test_folder_converts_and_passes_parity(name, folder, tmp_path):
    path, theirs = folder(name)
    run = convert_model(None, "onnx", "fp32", tmp_path, weights=path)
    prepared, report = run.prepared, run.results[0].report
    classes = theirs.config.num_labels
    assert (prepared.name, prepared.num_classes, prepared.image_size) == (name, classes, SIZE)
    assert prepared.labels == _labels(classes) and prepared.class_names() == _labels(classes)
    assert report.passed, report.failures
    assert report.metrics.max_rel < FP32_MAX_REL and report.metrics.top1_agreement == 1.0
    assert report.metrics.cosine_min > 0.999999


def test_bundle_from_a_folder_has_its_labels(folder, tmp_path):
    """An app bundle of the folder: labels.txt is id2label's, bundle.json records what was read (the
    folded BGR flip too) and the folder's preprocessing."""
    from apps.bundle import bundle_model

    path, _ = folder("mobilevit_xxs")
    result = bundle_model(None, "android", tmp_path, weights=path, golden=1)
    assert (result.folder / "labels.txt").read_text().split("\n")[:-1] == _labels(5)
    manifest = json.loads((result.folder / "bundle.json").read_text())
    notes = manifest["model"]["weights_notes"]
    assert CHANNEL_FLIP_NOTE in notes and any("id2label: cat, dog" in note for note in notes)
    assert manifest["preprocessing"]["resize"] == 72 and manifest["preprocessing"]["crop"] == SIZE
    assert manifest["preprocessing"]["color_order"] == "RGB" and manifest["parity"]["passed"]
    assert manifest["output"]["shape"] == [1, 5]


# ---------------------------------------------------------------------------------------------------
# Preprocessing: the folder's, as transformers applies it
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilevit_xxs", "swin_micro"])
def test_folder_preprocessing_gives_transformers_logits(name, folder):
    """A photo through transformers' own processor and model, and through ours as read from the folder:
    the same logits. Negative control: our model's default preprocessing does not give them."""
    from PIL import Image

    from mobilevit_deploy.data import preprocess_image
    from mobilevit_deploy.models import model_config

    path, theirs = folder(name)
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    side = (96, 96) if name.startswith("swin") else (96, 80)      # ViT's processor squashes; ours crops
    pixels = np.random.default_rng(0).integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    prepared = prepare_model(None, path)
    with torch.no_grad():
        expected = theirs(pixel_values=processor(images=image, return_tensors="pt").pixel_values).logits
        got = prepared.model(preprocess_image(image, prepared.preprocess)[None])
        default = prepared.model(preprocess_image(image, model_config(name).preprocess.with_size(SIZE))[None])
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) / scale < 1e-4
    assert float((default - expected).abs().max()) / scale > 1e-2


def test_processor_files_of_every_vintage():
    """An old feature extractor's plain numbers; a filter we do not resize with is one line."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preprocessor_config.json"
        path.write_text(json.dumps({**OLD_FEATURE_EXTRACTOR, "crop_size": 256, "size": 288, "resample": 2}))
        pre = read_processor(path).preprocess
        assert (pre.resize, pre.crop, pre.interpolation, pre.mean, pre.std) == (288, 256, "bilinear", (0.0,) * 3, (1.0,) * 3)
        path.write_text(json.dumps({"image_processor_type": "ViTImageProcessor", "size": {"height": 224, "width": 224},
                                    "do_rescale": False, "image_mean": [127.5] * 3, "image_std": [127.5] * 3}))
        pre = read_processor(path).preprocess      # raw 0..255 pixels: the same as [0, 1] and 0.5
        assert pre.mean == pytest.approx((0.5,) * 3) and pre.std == pytest.approx((0.5,) * 3)
        path.write_text(json.dumps({"size": {"height": 224, "width": 224}, "resample": 1}))
        with pytest.raises(WeightsError, match="resample lanczos; mvdeploy resizes with nearest, bilinear, bicubic"):
            read_processor(path)


# ---------------------------------------------------------------------------------------------------
# Which model: every built-in one is found from its own config.json; others are refused by name
# ---------------------------------------------------------------------------------------------------

HF_CONFIGS = {          # the Hub's configs of these models (apple/mobilevit-*, apple/mobilevitv2-*, microsoft/swin-*)
    "mobilevit_xxs": transformers.MobileViTConfig(hidden_sizes=[64, 80, 96], expand_ratio=2.0,
                                                  neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320]),
    "mobilevit_xs": transformers.MobileViTConfig(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": transformers.MobileViTConfig(),
    "mobilevitv2_050": transformers.MobileViTV2Config(width_multiplier=0.5),
    "mobilevitv2_075": transformers.MobileViTV2Config(width_multiplier=0.75),
    "mobilevitv2_100": transformers.MobileViTV2Config(),
    "swin_tiny": transformers.SwinConfig(),
    "swin_micro": transformers.SwinConfig(embed_dim=48, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16]),
}


def test_every_builtin_model_is_found_from_its_config(tmp_path):
    assert set(HF_CONFIGS) == set(MODELS)
    for name, config in HF_CONFIGS.items():
        assert describe_config(config.to_dict(), tmp_path / "config.json").model == name
        diff_only = config.to_diff_dict()            # what a config.json holds when defaults are left out
        assert describe_config(diff_only, tmp_path / "config.json").model == name, diff_only


def test_defaults_are_transformers_own():
    """The defaults filled into a config.json that leaves fields out are transformers' (for each field read)."""
    classes = {"mobilevit": transformers.MobileViTConfig, "mobilevitv2": transformers.MobileViTV2Config,
               "swin": transformers.SwinConfig}
    for model_type, architecture in ARCHITECTURES.items():
        theirs = classes[model_type]().to_dict()
        assert {k: theirs[k] for k in architecture.defaults} == architecture.defaults, model_type


def test_a_swin_no_builtin_has_is_refused_naming_the_closest(tmp_path):
    transformers.SwinConfig(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16]).save_pretrained(tmp_path)
    with pytest.raises(WeightsError) as error:
        convert_model(None, "onnx", "fp32", tmp_path / "out", weights=tmp_path)
    message = str(error.value)
    assert "no built-in model matches" in message and "the closest, swin_micro, differs in embed_dim 32 (ours 48)" in message
    assert message.endswith("built-in swin models: swin_tiny, swin_micro")
    window = transformers.SwinConfig(embed_dim=48, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16], image_size=256)
    with pytest.raises(WeightsError, match=r"image_size 256\).*window_size 7 \(ours 8\)"):
        describe_config(window.to_dict(), tmp_path / "config.json")     # at 256 our windows are 8


def test_a_folder_of_another_architecture_is_refused_by_name(tmp_path):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=16)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match=r"describes a model mvdeploy does not build: 'vit' "
                                           r"\(ViTForImageClassification\); it reads Hugging Face mobilevit, mobilevitv2, swin"):
        prepare_model(None, tmp_path)
    config = transformers.MobileViTConfig(hidden_sizes=[64, 80, 96], expand_ratio=2.0,
                                          neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320]).to_dict()
    with pytest.raises(WeightsError, match="describes MobileViTForSemanticSegmentation; mvdeploy converts MobileViTFor"):
        describe_config({**config, "architectures": ["MobileViTForSemanticSegmentation"]}, tmp_path / "config.json")


# ---------------------------------------------------------------------------------------------------
# Flags against the folder: one wins, the other conflicts
# ---------------------------------------------------------------------------------------------------

def test_a_conflicting_flag_is_one_line(cli, folder, tmp_path):
    path, _ = folder("mobilevit_xxs")
    for args, needle in ((("mobilevit_s",), f"model mobilevit_s conflicts with {path / 'config.json'}, which "
                                            "describes mobilevit_xxs"),
                         (("--num-classes", "7"), "--num-classes 7 conflicts with the weights: their head "
                                                  "classifier.weight has 5 classes")):
        result = cli("convert", *args, "--target", "onnx", "--weights", path, "--out", tmp_path / "out")
        assert result.returncode == 1 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr
        assert not (tmp_path / "out").exists()


def test_flags_that_win_and_agreeing_ones(folder):
    """--image-size wins over the folder's (and says so); a name and --num-classes that agree pass."""
    path, _ = folder("mobilevit_xxs")
    prepared = prepare_model("mobilevit_xxs", path, num_classes=5, image_size=128)
    assert (prepared.image_size, prepared.preprocess.resize, prepared.preprocess.crop) == (128, 144, 128)
    assert "input 128x128 from --image-size (the folder says 64)" in prepared.notes


def test_timm_checkpoint_takes_its_classes_from_its_head(tmp_path):
    """A bare state dict with our (timm's) names: the head's rows are the class count; no labels."""
    from safetensors.torch import save_file

    from mobilevit_deploy.models import create_model

    save_file(create_model("mobilevitv2_050", num_classes=3, seed=1).state_dict(), str(tmp_path / "w.safetensors"))
    prepared = prepare_model("mobilevitv2_050", tmp_path / "w.safetensors", image_size=SIZE)
    assert prepared.num_classes == 3 and prepared.labels is None
    assert prepared.class_names() == ["class_0", "class_1", "class_2"]
    assert "3 classes from the weights' head (head.fc.weight); no class names" in prepared.notes
    with pytest.raises(WeightsConflictError, match="--num-classes 1000 conflicts with the weights: their head "
                                                   "head.fc.weight has 3 classes"):
        prepare_model("mobilevitv2_050", tmp_path / "w.safetensors", num_classes=1000)


# ---------------------------------------------------------------------------------------------------
# transformers' own init: no signal, said as such
# ---------------------------------------------------------------------------------------------------

def test_untrained_folder_is_no_signal_not_a_failed_conversion(cli, tmp_path):
    """transformers' init of a MobileViT gives logits of ~1e-43: the check says the outputs carry no
    signal (exit 1), writes nothing, and blames no conversion."""
    config = transformers.MobileViTConfig(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320],
                                          expand_ratio=2.0, image_size=SIZE, **_with_labels(5))
    transformers.MobileViTForImageClassification(config).save_pretrained(tmp_path / "fresh")
    result = cli("convert", "--target", "onnx", "--weights", tmp_path / "fresh", "--out", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the model's outputs carry no signal on these inputs: all 40 outputs on 8 images " \
                               "are within" in lines[0], result.stderr
    assert "not a conversion defect" in lines[0] and "max_rel" not in lines[0] and "failed parity" not in result.stderr
    assert not (tmp_path / "out").exists()
