"""The digits data and the shipped reference checkpoints: the split, the model's preprocessing, the PNG
round trip, the accuracy of the shipped weights (with negative controls) and prepare_model's defaults."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mobilevit_deploy import pipeline
from mobilevit_deploy.checkpoints import REFERENCE_CHECKPOINTS
from mobilevit_deploy.data import load_folder, preprocess_image
from mobilevit_deploy.digits import (DIGIT_LABELS, DigitsDataset, digit_image, digits_loader, digits_split,
                                     digits_to_uint8, evaluate, export_digits_imagefolder, read_digits)
from mobilevit_deploy.errors import DataError
from mobilevit_deploy.models import create_model, model_config
from mobilevit_deploy.models.weights import load_weights

MIN_ACCURACY = 0.97          # the bar for the shipped checkpoints: fp32, the recorded test split
CHANCE_BAND = (0.0, 0.30)    # random or broken weights on ten balanced classes: around 10%
SIZE = 64                    # the side both checkpoints were trained at
MODELS = sorted(REFERENCE_CHECKPOINTS)



@pytest.fixture(scope="module")
def split():
    return digits_split()


@pytest.fixture(scope="module")
def test_images():
    """name -> the test split in that model's preprocessing, read once per module."""
    cache = {}

    def read(name: str):
        if name not in cache:
            cache[name] = read_digits("test", model_config(name).preprocess.with_size(SIZE))
        return cache[name]
    return read


def _accuracy(model, loaded) -> float:
    correct, _ = evaluate(model, loaded.images, loaded.labels)
    return correct / len(loaded.labels)


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

def test_split_is_stratified_deterministic_and_disjoint(split):
    """The bundled digits and split (checkpoints/digits.npz) are scikit-learn's, element for element."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    assert (len(split.train), len(split.test)) == (1347, 450)
    assert not set(split.train.indices) & set(split.test.indices)
    assert sorted([*split.train.indices, *split.test.indices]) == list(range(1797))
    assert np.array_equal(split.test.labels, digits.target[split.test.indices])
    assert np.array_equal(split.test.images, digits_to_uint8(digits.images[split.test.indices]))
    per_class = np.bincount(digits.target, minlength=10)
    per_class_test = np.bincount(split.test.labels, minlength=10)
    assert np.all(np.abs(per_class_test - 0.25 * per_class) <= 1)          # stratified
    _, test = train_test_split(np.arange(1797), test_size=0.25, random_state=0, stratify=digits.target)
    assert np.array_equal(np.sort(test), split.test.indices) and split.train.labels.dtype == np.int64
    again = digits_split(seed=0)
    assert np.array_equal(again.test.indices, split.test.indices)
    assert not np.array_equal(digits_split(seed=1).test.indices, split.test.indices)


def test_gray_levels_map_to_uint8():
    assert digits_to_uint8(np.array([0, 4, 8, 16])).tolist() == [0, 64, 128, 255]


@pytest.mark.parametrize("name", MODELS)
def test_dataset_yields_the_models_preprocessing(name, split):
    pre = model_config(name).preprocess.with_size(SIZE)
    dataset = DigitsDataset(split.test, pre)
    x, label = dataset[7]
    assert x.shape == (3, SIZE, SIZE) and label == split.test.labels[7]
    assert torch.equal(x, preprocess_image(digit_image(split.test.images[7]), pre))
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    pixels = x * std + mean                                              # back to [0, 1]
    assert torch.allclose(pixels, pixels[:1].expand(3, -1, -1), atol=1e-6)   # gray in three channels
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and pixels.max() > 0.9
    images, labels, skipped = next(iter(digits_loader(split.test, pre, batch_size=5)))   # through collate_skip
    assert images.shape == (5, 3, SIZE, SIZE) and skipped == 0
    assert torch.equal(images[0], dataset[0][0]) and labels.tolist() == split.test.labels[:5].tolist()


@pytest.mark.parametrize("name", MODELS)
def test_exported_png_tree_reads_back_as_the_dataset_tensors(name, split, test_images, tmp_path):
    """Tolerance 0: the PNGs hold the very 8x8 uint8 pixels the Dataset starts from, and both paths
    go through preprocess_image with the same Preprocess."""
    pre = model_config(name).preprocess.with_size(SIZE)
    assert export_digits_imagefolder(tmp_path / "digits", split="test") == 450
    loaded = load_folder(tmp_path / "digits", pre)
    assert loaded.classes == list(DIGIT_LABELS) and loaded.skipped == 0
    order = np.lexsort((split.test.indices, split.test.labels))          # ImageFolder order: class, then file
    expected = test_images(name)
    assert torch.equal(loaded.labels, expected.labels[order])
    assert torch.equal(loaded.images, expected.images[order])


def test_export_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old.png").write_bytes(b"")
    with pytest.raises(DataError, match="not an empty folder"):
        export_digits_imagefolder(tmp_path)
    with pytest.raises(DataError, match="unknown digits split"):
        export_digits_imagefolder(tmp_path / "new", split="validation")


# ---------------------------------------------------------------------------------------------------
# Shipped checkpoints
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_files_and_card_agree(name):
    reference = REFERENCE_CHECKPOINTS[name]
    facts = reference.facts
    assert reference.path.is_file() and reference.card.is_file()
    assert hashlib.sha256(reference.path.read_bytes()).hexdigest() == facts["sha256"]
    assert (facts["model"], facts["num_classes"], facts["labels"]) == (name, 10, list(DIGIT_LABELS))
    assert facts["preprocessing"]["image_size"] == reference.image_size == SIZE
    recorded = {key: facts["split"][key] for key in ("seed", "test_fraction", "train", "test")}
    assert recorded == {"seed": 0, "test_fraction": 0.25, "train": 1347, "test": 450}
    with safe_open(str(reference.path), "pt") as f:
        assert f.metadata()["model"] == name
    assert f"{facts['evaluation']['accuracy']:.2%}" in reference.card.read_text()


@pytest.mark.parametrize("name", MODELS)
def test_shipped_checkpoint_loads_strictly_and_reaches_the_bar(name, test_images):
    reference = REFERENCE_CHECKPOINTS[name]
    model = create_model(name, num_classes=10, image_size=SIZE, seed=1)
    load_weights(model, reference.path, name)                           # strict: raises on any mismatch
    loaded = test_images(name)
    correct, _ = evaluate(model, loaded.images, loaded.labels)
    assert correct / len(loaded.labels) >= MIN_ACCURACY
    assert abs(correct - reference.facts["evaluation"]["correct"]) <= 1   # what the card claims (+-1 for float order)


def test_negative_controls_score_near_chance(test_images, tmp_path):
    """The accuracy test must fail for weights that are not the trained ones: the seeded random init,
    and the shipped checkpoint with one tensor (the classifier's weight) shuffled, saved and re-read."""
    from safetensors.torch import load_file, save_file

    name = "mobilevit_xxs"
    loaded = test_images(name)
    random_model = create_model(name, num_classes=10, image_size=SIZE)
    assert CHANCE_BAND[0] <= _accuracy(random_model, loaded) <= CHANCE_BAND[1]

    state = load_file(str(REFERENCE_CHECKPOINTS[name].path))
    state["head.fc.weight"] = state["head.fc.weight"].roll(1, dims=0)   # class i now scores as class i+1
    save_file(state, str(tmp_path / "broken.safetensors"))
    broken = create_model(name, num_classes=10, image_size=SIZE)
    load_weights(broken, tmp_path / "broken.safetensors", name)
    assert CHANCE_BAND[0] <= _accuracy(broken, loaded) <= CHANCE_BAND[1]


# ---------------------------------------------------------------------------------------------------
# prepare_model defaults
# ---------------------------------------------------------------------------------------------------

def test_prepare_model_defaults_to_the_reference_checkpoint():
    prepared = pipeline.prepare_model("mobilevit_xxs")
    assert (prepared.image_size, prepared.num_classes, prepared.labels) == (SIZE, 10, list(DIGIT_LABELS))
    assert prepared.weights.startswith("reference:mobilevit_xxs_digits (digits 64x64, ") and prepared.trained
    assert prepared.preprocess == model_config("mobilevit_xxs").preprocess.with_size(SIZE)
    from safetensors.torch import load_file
    shipped = load_file(str(REFERENCE_CHECKPOINTS["mobilevit_xxs"].path))
    assert all(torch.equal(prepared.model.state_dict()[k], v) for k, v in shipped.items())
    assert pipeline.prepare_model("mobilevit_xxs", num_classes=10).weights == prepared.weights


def test_mobilevit_reference_weights_fit_another_size():
    prepared = pipeline.prepare_model("mobilevit_xxs", image_size=96)
    assert prepared.image_size == 96 and prepared.weights.startswith("reference:")
    assert prepared.model(torch.zeros(1, 3, 96, 96)).shape == (1, 10)


def test_swin_reference_weights_fit_another_size_with_resized_tables():
    prepared = pipeline.prepare_model("swin_micro", image_size=96)        # tests/test_swin_resize.py: the details
    assert prepared.image_size == 96 and prepared.weights.startswith("reference:")
    assert any("resized bicubically" in note for note in prepared.notes)
    assert pipeline.prepare_model("swin_micro", "random", image_size=96).weights == "random"


@pytest.mark.parametrize("weights", ["random", Path("random")], ids=["str", "path"])
def test_random_weights_on_request(weights):
    prepared = pipeline.prepare_model("mobilevit_xxs", weights, image_size=SIZE)
    assert prepared.weights == "random" and not prepared.trained and prepared.labels is None
    assert prepared.num_classes == 1000
    same = create_model("mobilevit_xxs", image_size=SIZE)
    assert all(torch.equal(a, b) for a, b in zip(prepared.model.state_dict().values(), same.state_dict().values()))


def test_other_models_and_class_counts_are_unchanged():
    prepared = pipeline.prepare_model("mobilevit_xxs", num_classes=1000, image_size=SIZE)
    assert prepared.weights == "random" and prepared.num_classes == 1000
    other = pipeline.prepare_model("mobilevit_xs", image_size=SIZE)
    assert other.weights == "random" and other.labels is None and other.num_classes == 1000
