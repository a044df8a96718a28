"""Image folders -> tensors: preprocessing, deterministic sampling, unreadable files, empty folders."""
import numpy as np
import pytest
import torch
from PIL import Image

from mobilevit_deploy.data import list_images, load_folder, preprocess_image, sample_files, synthetic_images
from mobilevit_deploy.errors import DataError
from mobilevit_deploy.spec import Preprocess


def _tree(root, classes=("cat", "dog"), per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_preprocess_resizes_crops_and_normalizes():
    pre = Preprocess(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = Image.new("RGB", (80, 40), (255, 255, 255))
    x = preprocess_image(white, pre)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-6)      # (1 - 0.5) / 0.5


def test_preprocess_from_dict_inverts_to_dict_and_sizes_a_mean_std_option():
    pre = Preprocess(288, 256, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), "BGR", "bilinear")
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert Preprocess.from_dict({"mean": [0, 0, 0], "std": [1, 1, 1]}, size=64) == Preprocess(64, 64)


def test_imagefolder_tree_labels_and_sampling(tmp_path):
    _tree(tmp_path)
    files, classes = list_images(tmp_path)
    assert classes == ["cat", "dog"] and len(files) == 6
    assert [f.label for f in files] == [0, 0, 0, 1, 1, 1]
    a, b = sample_files(files, 4, seed=1), sample_files(files, 4, seed=1)
    assert a == b and len(a) == 4


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    _tree(tmp_path, classes=("a",), per_class=2)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    loaded = load_folder(tmp_path, Preprocess(36, 32))
    assert loaded.skipped == 1 and loaded.images.shape == (2, 3, 32, 32)


def test_empty_and_unreadable_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_folder(tmp_path, Preprocess(36, 32))
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could be read"):
        load_folder(tmp_path, Preprocess(36, 32))
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "missing", Preprocess(36, 32))


def test_synthetic_images_are_seeded_and_in_range():
    pre = Preprocess(36, 32)
    a, b = synthetic_images(3, 32, pre, seed=0), synthetic_images(3, 32, pre, seed=0)
    assert torch.equal(a, b) and a.shape == (3, 3, 32, 32)
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.05
