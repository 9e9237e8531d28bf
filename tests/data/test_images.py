"""The embedded image datasets: procedural shapes and scikit-learn's 8x8 digits in three variants."""

import numpy as np
import pytest
import torch

from dulab.data import digits, load_dataset, shapes
from dulab.data.base import split_indices

# ---------------------------------------------------------------------------------------------------- shapes


def test_shapes_are_binary_non_empty_and_classes_are_balanced():
    ds = torch.utils.data.ConcatDataset([shapes.shapes(), shapes.shapes("test")])
    x = torch.cat([d.x for d in ds.datasets])
    y = torch.cat([d.y for d in ds.datasets])
    assert set(torch.unique(x).tolist()) == {0, 1}
    assert (x.flatten(1).sum(1) > 0).all()
    counts = torch.bincount(y, minlength=4)
    assert (counts > 1300).all()  # 6000 images, 4 equally likely classes: 1500 +- 3 standard deviations


def test_squares_fill_their_bounding_box_and_lines_are_thinnest():
    ds = shapes.shapes(num_samples=600)
    for img in ds.x[ds.y == 0, 0][:50]:  # filled, axis-aligned squares
        rows, cols = torch.nonzero(img, as_tuple=True)
        box = img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all())
    on = ds.x.flatten(1).sum(1).double()
    means = [float(on[ds.y == c].mean()) for c in range(4)]
    assert means[3] < min(means[:3])  # lines cover the fewest pixels


def test_shapes_size_option_and_determinism():
    ds = shapes.shapes(size=12, num_samples=120)
    assert ds.x.shape == (100, 1, 12, 12) and ds.spec.shape == (1, 12, 12)
    assert torch.equal(ds.x, shapes.shapes(size=12, num_samples=120).x)
    assert not torch.equal(ds.x, shapes.shapes(size=12, num_samples=120, seed=1).x)
    assert ds.info["class_names"] == ("square", "circle", "triangle", "line")


# ---------------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.int64), bunch.target.astype(np.int64)


def test_digits_are_scikit_learns_images_with_the_fixed_split(sklearn_digits):
    images, target = sklearn_digits
    train_idx, test_idx = split_indices(1797, 360 / 1797, seed=0)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        ds = digits.digits(split)
        assert torch.equal(ds.x[:, 0], torch.from_numpy(images[idx.numpy()]))
        assert torch.equal(ds.y, torch.from_numpy(target[idx.numpy()]))
    assert len(set(train_idx.tolist()) | set(test_idx.tolist())) == 1797  # disjoint and complete


def test_digits_binary_thresholds_at_eight():
    grey, binary = digits.digits("test"), digits.digits_binary("test")
    assert torch.equal(binary.x, (grey.x >= 8).long())
    assert torch.equal(binary.y, grey.y)


def test_digits_color_follows_the_formula():
    grey, colour = digits.digits(), digits.digits_color()
    assert torch.equal(colour.y, grey.y)
    t = grey.x.double() / 16  # (N, 1, 8, 8)
    checked = 0
    for g, c, ti in zip(grey.x[:, 0], colour.x, t[:, 0]):
        if not ((g == 0).any() and (g == 16).any()):
            continue
        bg = c[:, g == 0][:, 0]  # (3,) the colour of a value-0 pixel
        fg = c[:, g == 16][:, 0]
        assert not torch.equal(bg, fg)
        want = torch.floor(bg[:, None, None] + ti * (fg - bg)[:, None, None] + 0.5).long()
        assert torch.equal(c, want)
        checked += 1
    assert checked > 1000


def test_digits_color_seed_changes_colours_only():
    a, b = digits.digits_color(), digits.digits_color(seed=1)
    assert not torch.equal(a.x, b.x)
    assert torch.equal(a.y, b.y)
    assert torch.equal(a.x, digits.digits_color().x)


def test_digits_accept_root_and_split_only():
    assert len(load_dataset("digits_binary", split="test", root="/nonexistent")) == 360
