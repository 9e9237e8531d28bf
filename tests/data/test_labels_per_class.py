"""``labels_per_class=N`` on every labelled dataset: exactly N labels per class in the train split, the others -1,
seeded and deterministic; the test split and the spec unchanged; clear errors."""

import numpy as np
import pytest
import torch

from dulab.data import load_dataset
from dulab.registry import DATASETS, dataset_options, get_dataset_builder

LABELLED_EMBEDDED = {"digits": {}, "digits_binary": {}, "digits_color": {}, "shapes": {"num_samples": 600},
                     "sprites": {"size": 32, "num_samples": 600}}
LABELLED_FROM_FILES = ["mnist", "fashion_mnist", "cifar10", "image_folder", "npz"]


def test_every_labelled_dataset_has_the_option_and_unlabelled_ones_do_not():
    for name in DATASETS:
        options = dataset_options(get_dataset_builder(name))
        labelled = name in LABELLED_EMBEDDED or name in LABELLED_FROM_FILES
        assert ("labels_per_class" in options) == labelled, name
        if labelled:
            assert options["labels_per_class"][1] is None  # off by default


@pytest.mark.parametrize("name", list(LABELLED_EMBEDDED))
def test_exactly_n_labels_per_class_are_kept_in_the_train_split(name):
    options = LABELLED_EMBEDDED[name]
    full = load_dataset(name, **options)
    ds = load_dataset(name, labels_per_class=5, **options)
    assert ds.spec == full.spec and torch.equal(ds.x, full.x)
    kept = ds.y >= 0
    assert set(ds.y.unique().tolist()) == {-1} | set(range(full.spec.num_classes))
    assert torch.bincount(ds.y[kept]).tolist() == [5] * full.spec.num_classes
    assert torch.equal(ds.y[kept], full.y[kept])  # kept labels are the true ones
    assert torch.equal(ds.y, load_dataset(name, labels_per_class=5, **options).y)  # deterministic
    other = load_dataset(name, labels_per_class=5, label_seed=1, **options)
    assert not torch.equal(other.y, ds.y)
    test = load_dataset(name, split="test", labels_per_class=5, **options)
    assert torch.equal(test.y, load_dataset(name, split="test", **options).y)  # the test split keeps every label


def test_sprites_keep_their_factors_and_the_option_parses_cli_strings():
    ds = load_dataset("sprites", size="32", num_samples="120", labels_per_class="2")
    assert (ds.y >= 0).sum() == 6 and torch.equal(ds.factors[ds.y >= 0, 0], ds.y[ds.y >= 0])
    assert ds.info["labels_per_class"] == 2


def test_too_many_or_too_few_labels_say_the_smallest_class_count():
    counts = torch.bincount(load_dataset("digits").y)
    smallest = int(counts.min())
    assert load_dataset("digits", labels_per_class=smallest).y.ge(0).sum() == 10 * smallest
    with pytest.raises(ValueError, match=f"has {smallest} examples") as info:
        load_dataset("digits", labels_per_class=smallest + 1)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=">= 1"):
        load_dataset("digits", labels_per_class=0)


def test_npz_without_labels_refuses_the_option(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3), np.int64))
    with pytest.raises(ValueError, match="needs labels"):
        load_dataset("npz", path=str(tmp_path / "d.npz"), labels_per_class=1)


def test_npz_and_image_folder_with_labels(tmp_path):
    from PIL import Image

    np.savez(tmp_path / "d.npz", x=np.arange(60).reshape(30, 2) % 5, y=np.arange(30) % 3)
    ds = load_dataset("npz", path=str(tmp_path / "d.npz"), labels_per_class=2)
    assert torch.bincount(ds.y[ds.y >= 0]).tolist() == [2, 2, 2]
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (4, 4), i * 40).save(root / cls / f"{i}.png")
    ds = load_dataset("image_folder", root=str(root), labels_per_class=3, test_fraction=0.1)
    assert torch.bincount(ds.y[ds.y >= 0]).tolist() == [3, 3] and len(ds) == 11
