"""``load_dataset`` over every registered dataset: specs, splits, dtypes, ranges, determinism, options."""

import inspect
import typing

import pytest
import torch

import dulab
from dulab.data import TensorDataset, list_datasets, load_dataset
from dulab.registry import DATASETS, dataset_options, get_dataset_builder

# name -> (shape, kind, num_levels, num_classes, train size, test size) with default options. Sizes: toys draw
# 12000 (10000 + the last sixth), discrete toys 10000 (8333 + 1667), shapes 6000, digits 1437 + 360 (the split
# of the brief), text by corpus length (checked in test_text.py).
EMBEDDED = {
    "moons": ((2,), "continuous", None, 2, 10000, 2000),
    "circles": ((2,), "continuous", None, 2, 10000, 2000),
    "eight_gaussians": ((2,), "continuous", None, 8, 10000, 2000),
    "checkerboard": ((2,), "continuous", None, None, 10000, 2000),
    "spirals": ((2,), "continuous", None, 2, 10000, 2000),
    "swiss_roll": ((2,), "continuous", None, None, 10000, 2000),
    "face": ((2,), "continuous", None, 3, 10000, 2000),
    "gaussians2d": ((2,), "continuous", None, None, 10000, 2000),
    "ring8": ((2,), "continuous", None, 8, 10000, 2000),
    "grid25": ((2,), "continuous", None, 25, 10000, 2000),
    "discrete1d": ((1,), "discrete", 20, None, 8333, 1667),
    "discrete2d": ((2,), "discrete", 25, None, 8333, 1667),
    "shapes": ((1, 20, 20), "discrete", 2, 4, 5000, 1000),
    "digits": ((1, 8, 8), "discrete", 17, 10, 1437, 360),
    "digits_binary": ((1, 8, 8), "discrete", 2, 10, 1437, 360),
    "digits_color": ((3, 8, 8), "discrete", 4, 10, 1437, 360),
    "digits_ood": ((1, 8, 8), "discrete", 17, None, 360, 360),  # out-of-distribution sets for digits models
    "sprites": ((1, 64, 64), "discrete", 2, 3, 5000, 1000),  # num_samples=6000, the test split the last sixth
    "photos": ((3, 32, 32), "discrete", 256, None, 5000, 5000),  # num_crops=5000 in each split
    "text": None,
}
FROM_FILES = ["mnist", "fashion_mnist", "cifar10", "image_folder", "npz"]


def _needs_extras(name):
    if name == "photos":  # an optional extra: pip install 'dulab[photos]' (make test installs it)
        pytest.importorskip("skimage")


def test_every_registered_dataset_is_covered_here():
    assert set(list_datasets()) == set(EMBEDDED) | set(FROM_FILES)
    assert dulab.datasets.list_datasets() == list(DATASETS)


@pytest.mark.parametrize("name", list(DATASETS))
def test_builder_signature_follows_the_convention(name):
    builder = get_dataset_builder(name)
    params = list(inspect.signature(builder).parameters.values())
    assert [p.name for p in params[:2]] == ["split", "root"]
    assert params[0].default == "train" and params[1].default is None
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:])
    hints = typing.get_type_hints(builder)
    for option, (annotation, default) in dataset_options(builder).items():
        assert annotation is not None, f"{name}.{option} has no type annotation"
        assert default is not inspect.Parameter.empty, f"{name}.{option} has no default"
    assert hints["return"] is TensorDataset


@pytest.mark.parametrize("name", [n for n in EMBEDDED if EMBEDDED[n]])
def test_spec_split_sizes_dtypes_and_ranges(name):
    _needs_extras(name)
    shape, kind, levels, classes, n_train, n_test = EMBEDDED[name]
    train, test = load_dataset(name), load_dataset(name, split="test")
    for ds, n in ((train, n_train), (test, n_test)):
        assert isinstance(ds, TensorDataset)
        spec = ds.spec
        assert (spec.shape, spec.kind, spec.num_levels, spec.num_classes) == (shape, kind, levels, classes)
        assert tuple(ds.x.shape) == (n, *shape)
        if kind == "discrete":
            assert ds.x.dtype == torch.int64
            assert int(ds.x.min()) >= 0 and int(ds.x.max()) < levels
        else:
            assert ds.x.dtype == torch.float32
            assert torch.isfinite(ds.x).all()
        if classes is None:
            assert ds.y is None
            assert int(ds[0][1]) == -1
        else:
            assert ds.y.dtype == torch.int64 and tuple(ds.y.shape) == (n,)
            assert int(ds.y.min()) >= 0 and int(ds.y.max()) < classes
            assert len(torch.unique(ds.y)) == classes  # every class occurs
    x0, y0 = train[0]
    assert torch.equal(x0, train.x[0])


@pytest.mark.parametrize("name", [n for n in EMBEDDED])
def test_loading_twice_gives_equal_data_even_after_the_first_copy_is_changed(name):
    _needs_extras(name)
    a = load_dataset(name)
    expected = a.x.clone()
    a.x.zero_()  # must not reach the cache
    b = load_dataset(name)
    assert torch.equal(b.x, expected)
    assert (a.y is None) == (b.y is None)


def test_text_spec():
    ds = load_dataset("text")
    assert ds.spec.shape == (64,) and ds.spec.kind == "discrete"
    assert ds.spec.num_levels == len(ds.info["vocab"])


@pytest.mark.parametrize("name", FROM_FILES)
def test_file_datasets_without_root_say_what_to_pass(name):
    with pytest.raises(ValueError, match="root|path"):
        load_dataset(name)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"valid options: bins, num_samples, seed") as info:
        load_dataset("discrete1d", bin=10)
    assert "'bins'" in str(info.value)  # the closest option is suggested
    assert "\n" not in str(info.value)


def test_dataset_without_options_says_so():
    with pytest.raises(ValueError, match="no option"):
        load_dataset("digits", seed=3)


def test_string_options_are_coerced_to_the_declared_type():
    ds = load_dataset("discrete1d", bins="100", num_samples="600", seed="2")
    assert ds.spec.num_levels == 100 and len(ds) == 500
    ds = load_dataset("gaussians2d", covariance="diagonal")
    assert ds.x.shape == (10000, 2)
    ds = load_dataset("text", seq_len="32", max_chars="none")
    assert ds.spec.shape == (32,)


@pytest.mark.parametrize(("name", "options"), [
    ("discrete1d", {"bins": "many"}),
    ("gaussians2d", {"covariance": "spherical"}),
    ("moons", {"noise": "-1"}),
    ("discrete2d", {"bins": 1}),
    ("shapes", {"size": 4}),
])
def test_bad_option_values_raise_one_line_user_errors(name, options):
    with pytest.raises(ValueError) as info:
        load_dataset(name, **options)
    assert "\n" not in str(info.value)


def test_bad_split_is_rejected_by_loader_and_builder():
    with pytest.raises(ValueError, match="split"):
        load_dataset("moons", split="valid")
    with pytest.raises(ValueError, match="split"):
        get_dataset_builder("moons")(split="valid")


@pytest.mark.parametrize("name", ["eight_gaussians", "checkerboard", "gaussians2d", "discrete1d", "discrete2d"])
def test_datasets_with_a_true_density_survive_pickling(name):
    # DataLoader workers and spawned DDP processes pickle datasets: no lambdas or closures inside.
    import pickle

    ds = load_dataset(name)
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy.x, ds.x)
    assert torch.equal(copy.true_log_prob(ds.x[:10]), ds.true_log_prob(ds.x[:10]))
