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


def test_a_listing_file_names_images_and_their_labels(tmp_path):
    """path,label lines: relative to the listing's folder, in the listing's order; class names indexed in sorted
    order (as folders are), whole numbers taken as indices; header, blank and # lines skipped."""
    from mobilevit_deploy.data import list_images

    _tree(tmp_path / "photos")
    (tmp_path / "lists").mkdir()
    names = tmp_path / "lists" / "names.csv"
    names.write_text("path,label\n../photos/dog/0.png,dog\n\n# a comment\n"
                     f"{tmp_path / 'photos' / 'cat' / '1.png'},cat\n../photos/cat/2.png, cat\n")
    files, classes = list_images(names)
    assert classes == ["cat", "dog"] and [f.label for f in files] == [1, 0, 0]
    assert [f.path.resolve() for f in files] == [(tmp_path / "photos" / c / f"{i}.png").resolve()
                                                 for c, i in (("dog", 0), ("cat", 1), ("cat", 2))]
    swapped = tmp_path / "lists" / "swapped.txt"       # negative control: the labels are the listing's, not the folders'
    swapped.write_text("../photos/dog/0.png,cat\n../photos/cat/1.png,dog\n")
    assert [f.label for f in list_images(swapped)[0]] == [0, 1]
    indices = tmp_path / "lists" / "indices.csv"
    indices.write_text("../photos/dog/0.png,7\n../photos/cat/1.png,0\n")
    by_index, no_names = list_images(indices)
    assert no_names == [] and [(f.path, f.label) for f in by_index] == [(files[0].path, 7), (indices.parent / "../photos/cat/1.png", 0)]


def test_a_listing_with_a_missing_image_or_a_bad_line_is_one_clear_error(tmp_path):
    _tree(tmp_path, classes=("a",), per_class=1)
    listing = tmp_path / "list.csv"
    listing.write_text("a/0.png,a\na/gone.png,a\nb/gone.png,b\n")
    with pytest.raises(DataError) as missing:
        list_images(listing)
    assert str(missing.value) == f"listing file {listing}: 2 of its 3 images do not exist (first: line 2, a/gone.png)"
    listing.write_text("a/0.png a\n")
    with pytest.raises(DataError, match=r"line 1: expected `path,label`"):
        list_images(listing)
    with pytest.raises(DataError, match="image folder or listing file .* does not exist"):
        list_images(tmp_path / "nowhere.csv")


def test_a_file_shard_decodes_what_load_folder_decodes_and_names_the_unreadable(tmp_path):
    """The task-side read is the folder read: the same tensors, whichever way the shard is cut."""
    from mobilevit_deploy.data import FileShard

    _tree(tmp_path, classes=("a", "b"), per_class=2)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    pre = Preprocess(36, 32)
    files, _ = list_images(tmp_path)
    whole = FileShard(tuple(files)).read(pre)
    loaded = load_folder(tmp_path, pre)
    assert np.array_equal(whole.images, loaded.images.numpy()) and whole.labels.tolist() == [0, 0, 1, 1]
    assert whole.unreadable == (str(tmp_path / "a" / "broken.jpg"),)
    parts = [FileShard(tuple(files)).part(a, a + 2).read(pre) for a in range(0, len(files), 2)]
    assert np.array_equal(np.concatenate([p.images for p in parts if len(p.labels)]), whole.images)
