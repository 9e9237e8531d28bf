"""Coder efficiency: the file for 1000 digits is within 1% of sum(-log2 p(x)) plus the documented overhead.

``-log2 p(x)`` is the model's own ``log_prob`` (one full pass); the overhead is the header (``overhead_bytes``:
magic, version, length, JSON header, SHA-256 digest) plus at most two 32-bit words the range coder flushes.
"""

import math

import torch

import dulab
from dulab.compression import compress, decompress, inspect


def _fit(model, x, steps=25):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (128,), generator=g)]
        opt.zero_grad()
        (-model.log_prob(batch).mean()).backward()
        opt.step()
    return model.eval()


def test_1000_digits_cost_within_one_percent_of_their_likelihood():
    ds = dulab.load_dataset("digits", "train")
    x = ds.x[:1000]
    torch.manual_seed(0)
    model = dulab.build_model("pixel_cnn", ds.spec, num_filters=8, num_layers=2, first_kernel_size=3,
                              num_head_filters=8, dropout=0.0)
    _fit(model, x)  # a little training: peaked conditionals, the harder case for fixed-point tables
    with torch.no_grad():
        ideal_bits = float(-model.log_prob(x).double().sum()) / math.log(2)
    assert ideal_bits / x[0].numel() / len(x) < math.log2(17) - 0.5  # the model learned something
    data = compress(model, x)
    info = inspect(data)
    overhead_bits = 8 * info["overhead_bytes"] + 64
    assert 8 * len(data) <= 1.01 * ideal_bits + overhead_bits
    assert info["payload_bits"] >= 0.99 * ideal_bits  # no code beats the model by more than rounding
    assert torch.equal(decompress(model, data), x)
