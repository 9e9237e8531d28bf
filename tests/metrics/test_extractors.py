"""The offline feature extractors: shipped classifiers and the FID InceptionV3 loading path."""

from __future__ import annotations

import pytest
import torch

import dulab
from dulab.errors import UserError
from dulab.metrics.extractors import EXTRACTORS, FIDInceptionV3, extractor_for, load_fid_weights, read_metadata

# Floors asserted on the test split: the accuracy measured by benchmarks/train_extractors.py (in the weights'
# metadata and BENCHMARKS.md) minus a margin of one to two percentage points. Measured: digits 0.986,
# digits_color 0.967, shapes 1.000, sprites 0.998.
FLOORS = {"digits": 0.97, "digits_color": 0.95, "shapes": 0.98, "sprites": 0.98, "sprites_32": 0.965}
FEATURE_DIMS = {"digits": 128, "digits_color": 128, "shapes": 128, "sprites": 64, "sprites_32": 64}
# every shipped file: the default entry of each dataset and its variants at other shapes (sprites_32: 0.980)
ENTRIES = {e.filename.removesuffix(".safetensors"): e for entry in EXTRACTORS.values() for e in entry.all_entries()}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_labelled_embedded_image_set_has_an_extractor():
    assert {"digits", "digits_color", "shapes"} <= set(EXTRACTORS)
    for entry in ENTRIES.values():
        assert entry.path.is_file()
        assert entry.path.stat().st_size < 1_000_000


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_shipped_extractor_classifies_its_test_split(name):
    entry = ENTRIES[name]
    test = dulab.load_dataset(entry.dataset, split="test", **dict(entry.options))
    model = extractor_for(entry.dataset, shape=test.spec.shape)
    assert tuple(model.input_shape) == tuple(test.spec.shape)
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    with torch.no_grad():
        logits = model(test.x)
        feats = model.features(test.x[:16])
    assert logits.shape == (len(test), test.spec.num_classes)
    accuracy = (logits.argmax(1) == test.y).double().mean().item()
    meta = read_metadata(entry.path)
    # The metadata records the accuracy of the same weights on the same split: it must agree exactly.
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9)
    assert accuracy >= FLOORS[name]
    assert feats.shape == (16, FEATURE_DIMS[name]) and feats.shape[1] == model.feature_dim
    assert torch.isfinite(feats).all() and (feats >= 0).all()
    with torch.no_grad():
        both = model.features_and_logits(test.x[:16])
    torch.testing.assert_close(both[0], feats)
    torch.testing.assert_close(both[1], logits[:16])


def test_extractor_is_deterministic_and_independent_of_batching():
    model_a, model_b = extractor_for("digits"), extractor_for("digits")
    x = dulab.load_dataset("digits", split="test").x[:32]
    with torch.no_grad():
        whole = model_a.features(x)
        halves = torch.cat([model_b.features(x[:16]), model_b.features(x[16:])])
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model_a.features(x), whole)


def test_extractors_are_separate_modules():
    a, b = extractor_for("digits"), extractor_for("digits")
    with torch.no_grad():
        a.head.bias.add_(1.0)
    assert not torch.equal(a.head.bias, b.head.bias)


def test_wrong_shape_is_a_user_error():
    with pytest.raises(UserError, match="shape"):
        extractor_for("digits").features(torch.zeros(2, 3, 8, 8, dtype=torch.long))


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="unknown dataset"):
        extractor_for("digitz")


@pytest.mark.parametrize("name", ["photos", "mnist", "cifar10", "image_folder"])
def test_data_without_extractor_names_the_options(name):
    with pytest.raises(UserError) as info:
        extractor_for(name)
    message = str(info.value)
    assert "--feature-weights PATH" in message
    assert all(shipped in message for shipped in EXTRACTORS)


def _reference_key_names() -> set[str]:
    """The parameter/buffer names of the FID InceptionV3, rebuilt by hand from torchvision's ``Inception3``
    (``num_classes=1008, aux_logits=False``) and pytorch-fid's FIDInception blocks, which keep torchvision's names.
    """
    blocks = {
        "A": ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
              "branch_pool"],
        "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
        "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
              "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"],
        "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
        "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
              "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
    }
    layout = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C", "Mixed_6c": "C",
              "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}
    convs = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    convs += [f"{m}.{b}" for m, kind in layout.items() for b in blocks[kind]]
    keys = {"fc.weight", "fc.bias"}
    for c in convs:
        keys |= {f"{c}.conv.weight"} | {f"{c}.bn.{p}" for p in
                                         ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    return keys


def test_inception_key_names_match_the_reference_layout():
    state = FIDInceptionV3().state_dict()
    assert set(state) == _reference_key_names()
    assert state["fc.weight"].shape == (1008, 2048)
    # Widths from the paper's Table 1 / torchvision: 2048 channels into the pool after Mixed_7c.
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    # torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, with the auxiliary head). The
    # auxiliary head has 3,326,696 (conv0 128x768 + bn, conv1 768x128x5x5 + bn, fc 768x1000 + bias); 8 more
    # classes add 8 x 2049: 23,850,960 for the FID network.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 27_161_264 - 3_326_696 + 8 * 2049


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():  # non-trivial batch-norm statistics so that a wrong buffer mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-random.pth"
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # as TF ports
    torch.save(state, path)
    return path, net.eval()


def test_inception_random_weights_round_trip(random_inception_file):
    path, reference = random_inception_file
    x = torch.randint(0, 17, (2, 1, 8, 8))  # digits-like: grey levels, 8x8, resized to 299 inside
    model = extractor_for("digits", feature_weights=str(path), num_levels=17)
    assert isinstance(model, FIDInceptionV3) and not model.training
    reference.num_levels = 17
    with torch.no_grad():
        feats, logits = model.features(x), model(x)
        expected = reference.features(x)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    torch.testing.assert_close(feats, expected)
    torch.testing.assert_close(logits, model.fc(feats))
    both = model.features_and_logits(x)
    torch.testing.assert_close(both[0], feats)
    torch.testing.assert_close(both[1], logits)


def test_inception_preprocess_scales_levels_to_unit_range_then_minus_one_one():
    net = FIDInceptionV3(num_levels=17)
    x = torch.tensor([0, 16]).repeat(8, 4).reshape(1, 1, 8, 8)
    y = net.preprocess(x)
    assert y.shape == (1, 3, 299, 299)
    assert y.min().item() == pytest.approx(-1.0, abs=1e-6) and y.max().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(y[:, 0], y[:, 2])


def test_wrong_inception_files_are_user_errors(tmp_path, random_inception_file):
    with pytest.raises(UserError, match="no such file"):
        load_fid_weights(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a torch state dict"):
        load_fid_weights(garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="missing"):
        load_fid_weights(wrong)
    path, _ = random_inception_file
    state = torch.load(path, weights_only=True)
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the FID graph's
    renamed = tmp_path / "shape.pth"
    torch.save(state, renamed)
    with pytest.raises(UserError, match="fc.weight"):
        load_fid_weights(renamed)
