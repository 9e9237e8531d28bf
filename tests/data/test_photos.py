"""``photos``: crops of scikit-image's bundled photographs; the test split uses other photographs (by name and by
pixels), crops are windows of the photographs, options and the message when scikit-image is missing."""

import builtins

import numpy as np
import pytest
import torch

from dulab.data import load_dataset, photos

pytest.importorskip("skimage")


def _rows(ds):
    return {r.tobytes() for r in ds.x.numpy().astype(np.uint8)}


@pytest.mark.parametrize("grayscale", [False, True])
def test_splits_share_no_photograph_and_no_crop(grayscale):
    train = load_dataset("photos", num_crops=1500, grayscale=grayscale)
    test = load_dataset("photos", split="test", num_crops=1500, grayscale=grayscale)
    assert not set(train.info["photos"]) & set(test.info["photos"])
    grey = set(photos.GREY_TRAIN_PHOTOS) if grayscale else set()
    assert set(train.info["photos"]) == set(photos.TRAIN_PHOTOS) | grey
    for ds in (train, test):  # every photograph of the split is used, and only those
        assert ds.info["sources"].unique().tolist() == list(range(len(ds.info["photos"])))
    assert not _rows(train) & _rows(test)


def test_default_spec_shapes_dtypes_and_levels():
    ds = load_dataset("photos", num_crops=200)
    assert ds.spec.shape == (3, 32, 32) and ds.spec.kind == "discrete" and ds.spec.num_levels == 256
    assert ds.spec.num_classes is None and ds.y is None and int(ds[0][1]) == -1
    assert ds.x.dtype == torch.int64 and ds.x.shape == (200, 3, 32, 32)
    assert 0 <= int(ds.x.min()) and int(ds.x.max()) <= 255 and int(ds.x.max()) > 200  # natural images use the range
    assert torch.equal(ds.x, load_dataset("photos", num_crops=200).x)  # deterministic
    assert not torch.equal(ds.x, load_dataset("photos", num_crops=200, seed=1).x)


def test_a_crop_is_a_window_of_its_photograph():
    ds = photos.photos(num_crops=20, size=16)
    for x, source in zip(ds.x.numpy(), ds.info["sources"].tolist()):
        name = ds.info["photos"][source]
        found = False
        for factor in photos.PYRAMID:
            level = photos._level(name, False, factor)
            # the window's first row must occur in the photograph at this level: search its top-left pixel
            tops, lefts = np.nonzero((level[:, :-15, :-15] == x[:, :1, :1]).all(0))
            for t, l in zip(tops, lefts):
                if np.array_equal(level[:, t:t + 16, l:l + 16], x):
                    found = True
                    break
            if found:
                break
        assert found, f"crop of {name} not found in its photograph"


def test_size_grayscale_and_bits_options():
    ds = load_dataset("photos", size="12", grayscale="true", bits="4", num_crops="50")
    assert ds.spec.shape == (1, 12, 12) and ds.spec.num_levels == 16 and int(ds.x.max()) <= 15
    full = load_dataset("photos", size=12, grayscale=True, num_crops=50)
    assert torch.equal(ds.x, full.x // 16)  # bits=4 keeps the top four bits


@pytest.mark.parametrize("options", [{"size": 2}, {"size": 400}, {"num_crops": 0}, {"bits": 9}, {"seed": -2}])
def test_bad_options_raise_one_line_user_errors(options):
    with pytest.raises(ValueError) as info:
        load_dataset("photos", **options)
    assert "\n" not in str(info.value)


def test_missing_scikit_image_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    photos._photo.cache_clear()
    photos._level.cache_clear()
    photos._crops.cache_clear()
    with pytest.raises(ValueError, match=r"photos needs scikit-image: pip install 'dulab\[photos\]'"):
        load_dataset("photos", num_crops=3, seed=5)
