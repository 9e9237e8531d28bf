"""decode(encode(x)) == x for every model that can drive the coder, on random and real data.

Every autoregressive-family registry entry is checked (a new one is covered the moment it is registered); the
coder's integer tables are checked to be the ones constriction codes with (payload = their ideal length + the
range coder's final words).
"""

import numpy as np
import pytest
import torch

import dulab
from dulab.compression import compress, conditionals_for, decompress, inspect, quantize, quantized_bits
from dulab.data.base import DataSpec
from dulab.registry import MODELS

#: small networks (unlisted models: their defaults)
TINY = {
    "histogram": {},
    "made": {"hidden_sizes": (32,)},
    "rnn": {"hidden_size": 16, "embed_dim": 8},
    "wavenet": {"residual_channels": 8, "skip_channels": 8, "num_layers": 3, "dilation_cycle": 3, "embed_dim": 8},
    "transformer": {"embed_dim": 16, "num_heads": 2, "num_layers": 1},
    "pixel_cnn": {"num_filters": 8, "num_layers": 2, "first_kernel_size": 3, "num_head_filters": 8},
    "gated_pixel_cnn": {"num_filters": 8, "num_layers": 2, "first_kernel_size": 3, "num_head_filters": 8},
    "pixel_cnn_pp": {"num_filters": 6, "num_blocks": 1, "num_scales": 1, "num_components": 2},
    "pixel_snail": {"num_filters": 6, "num_blocks": 1, "num_res_layers": 1, "first_kernel_size": 3,
                    "attention_dim": 4, "num_head_filters": 6},
}
CODING_MODELS = [n for n, e in MODELS.items() if e.family == "autoregressive"]
RGB = DataSpec((3, 4, 4), "discrete", 4, None)  # colour: tests the R -> G -> B order within a pixel


def build(name, spec, seed=0):
    torch.manual_seed(seed)
    model = dulab.build_model(name, spec, **TINY.get(name, {})).eval()
    with torch.no_grad():  # untrained but not uniform: random logits make the tables uneven
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return model


@pytest.mark.parametrize("name", CODING_MODELS)
def test_roundtrip_random_levels(name):
    model = build(name, RGB)
    x = np.random.default_rng(0).integers(0, 4, (5, 3, 4, 4)).astype(np.uint8)
    data = compress(model, x, batch_size=3)  # two batches of different sizes
    y = decompress(model, data)
    assert y.dtype == np.uint8 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("name", CODING_MODELS)
def test_roundtrip_real_digits_as_tensor(name):
    ds = dulab.load_dataset("digits", "test")
    model = build(name, ds.spec)
    x = ds.x[:6]
    y = decompress(model, compress(model, x))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.int64
    assert torch.equal(y, x)


def test_roundtrip_text_with_a_sequence_model():
    ds = dulab.load_dataset("text", "test")
    model = build("transformer", ds.spec)
    x = ds.x[:4].numpy()
    np.testing.assert_array_equal(decompress(model, compress(model, x)), x)


def test_joint_histogram_codes_one_symbol_per_example():
    spec = DataSpec((2, 2), "discrete", 3, None)  # 3^4 = 81 configurations: the joint table
    model = build("histogram", spec)
    assert model.joint
    x = np.random.default_rng(1).integers(0, 3, (50, 2, 2))
    data = compress(model, x)
    np.testing.assert_array_equal(decompress(model, data), x)
    with torch.no_grad():
        ideal = float(-model.log_prob(torch.from_numpy(x)).double().sum()) / np.log(2)
    assert inspect(data)["payload_bits"] <= ideal + 64 + 1e-3 * ideal


def test_single_example_and_empty_input_keep_their_shape():
    model = build("pixel_cnn", RGB)
    one = np.random.default_rng(2).integers(0, 4, (3, 4, 4))
    np.testing.assert_array_equal(decompress(model, compress(model, one)), one)
    empty = np.zeros((0, 3, 4, 4), dtype=np.int16)
    out = decompress(model, compress(model, empty))
    assert out.shape == (0, 3, 4, 4) and out.dtype == np.int16


def test_same_input_gives_the_same_bytes():
    model = build("pixel_cnn_pp", RGB)
    x = np.random.default_rng(3).integers(0, 4, (4, 3, 4, 4))
    assert compress(model, x) == compress(model, x)


@pytest.mark.parametrize("name", ["pixel_cnn", "pixel_cnn_pp", "rnn"])
def test_payload_is_the_ideal_length_of_the_quantised_tables(name):
    """constriction codes with exactly our integer tables: payload = sum -log2(q/2^24) + < 64 bits of flush."""
    ds = dulab.load_dataset("digits", "train")
    model = build(name, ds.spec)
    x = ds.x[:12]
    data = compress(model, x, batch_size=64)
    with torch.inference_mode():
        cond = conditionals_for(model, len(x))
        targets = cond.targets(x)
        bits = 0.0
        for t in range(cond.num_steps):
            q = quantize(cond.log_probs(t).numpy())
            bits += quantized_bits(q, targets[:, t].numpy())
            cond.feed(t, targets[:, t])
    payload = inspect(data)["payload_bits"]
    assert bits <= payload <= bits + 64, (payload, bits)


def test_quantize_is_a_valid_table_with_a_floor_of_one():
    lp = np.log(np.array([[1.0, 1e-300, 1e-200, 1e-30], [0.25, 0.25, 0.25, 0.25], [1e-3, 0.5, 0.3, 0.2]]))
    lp[0, 1] = -np.inf  # impossible under the model: still codable
    q = quantize(lp)
    assert q.dtype == np.int64 and (q >= 1).all() and (q.sum(1) == 1 << 24).all()
    np.testing.assert_array_equal(q[1], [1 << 22] * 4)
    assert abs(q[2, 1] / (1 << 24) - 0.5 / 1.001) < 1e-6  # rows are normalised first


@pytest.mark.parametrize("name", ["pixel_cnn", "gated_pixel_cnn"])
def test_receptive_field_crops_code_at_the_models_likelihood(name):
    """On 12x12 images the conditionals come from crops smaller than the image; the code length still matches."""
    spec = DataSpec((1, 12, 12), "discrete", 3, None)
    model = build(name, spec)
    up, left, right = model.receptive_field()
    assert up < 11 and left + right + 1 < 12  # the crops are really smaller than the image
    x = np.random.default_rng(4).integers(0, 3, (8, 1, 12, 12))
    data = compress(model, x)
    np.testing.assert_array_equal(decompress(model, data), x)
    with torch.no_grad():
        ideal = float(-model.log_prob(torch.from_numpy(x)).double().sum()) / np.log(2)
    assert abs(inspect(data)["payload_bits"] - ideal) <= 64 + 1e-3 * ideal
