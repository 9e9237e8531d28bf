"""``sprites``: factors re-render the images exactly, cover their ranges, splits share no factor combination, and
each factor changes the image as the geometry says (rotation equivariance, closed-form areas, centroids)."""

import math

import numpy as np
import pytest
import torch

from dulab.data import load_dataset
from dulab.data.sprites import FACTOR_SIZES, POSITIONS, SCALES, render, sprites


def _grid_rows(**fixed):
    """Factor rows (N, 5) over every rotation, with the other factors fixed."""
    rows = np.zeros((40, 5), dtype=np.int64)
    rows[:, 2] = np.arange(40)
    for name, value in fixed.items():
        rows[:, ("shape", "scale", "rotation", "pos_x", "pos_y").index(name)] = value
    return rows


@pytest.mark.parametrize("size", [32, 64])
def test_factors_rerender_the_images_exactly(size):
    ds = sprites(size=size, num_samples=1200, seed=3)
    assert ds.spec.shape == (1, size, size) and ds.spec.num_levels == 2 and ds.spec.num_classes == 3
    assert ds.x.dtype == torch.int64 and set(ds.x.unique().tolist()) == {0, 1}
    assert ds.factors.dtype == torch.int64 and ds.factors.shape == (1000, 5)
    assert ds.info["factors"] is ds.factors
    assert ds.info["factor_sizes"] == (3, 6, 40, 32, 32)
    assert ds.info["factor_names"] == ("shape", "scale", "rotation", "pos_x", "pos_y")
    assert torch.equal(torch.from_numpy(render(ds.factors, size)).long(), ds.x)
    assert torch.equal(ds.y, ds.factors[:, 0])  # the label is the shape
    assert ds.x.flatten(1).any(1).all()  # every image shows its shape


def test_default_split_covers_every_factor_value_and_splits_share_no_combination():
    train, test = load_dataset("sprites"), load_dataset("sprites", split="test")
    assert len(train) == 5000 and len(test) == 1000  # num_samples=6000, test = the last sixth
    for k, n in enumerate(FACTOR_SIZES):
        assert train.factors[:, k].unique().tolist() == list(range(n))
    other_seed = sprites("test", seed=7, num_samples=6000)  # the test pool does not depend on the seed
    as_set = lambda ds: set(map(tuple, ds.factors.tolist()))  # noqa: E731
    assert len(as_set(train)) == len(train)  # drawn without replacement
    assert not as_set(train) & as_set(test) and not as_set(train) & as_set(other_seed)
    assert torch.equal(sprites().x, train.x)  # deterministic
    assert not torch.equal(sprites(seed=1).factors, train.factors)


def test_subset_carries_the_factors():
    ds = sprites(size=32, num_samples=60)
    part = ds.subset([4, 1, 7])
    assert torch.equal(part.factors, ds.factors[[4, 1, 7]]) and part.info["factors"] is part.factors
    assert torch.equal(part.y, part.factors[:, 0])


@pytest.mark.parametrize("size", [32, 64])
def test_turning_the_canvas_by_a_quarter_turn_adds_ten_rotation_steps(size):
    # Rotating the image by 90 degrees CCW about the canvas centre maps pixel centres onto pixel centres and
    # position (kx, ky) to (ky, 31 - kx), and turns the shape by 2 pi / 4 = 10 of the 40 rotation steps; half a
    # turn maps (kx, ky) to (31 - kx, 31 - ky) and adds 20 steps. Exact, since both sides test the same points.
    rng = np.random.default_rng(0)
    f = np.stack([rng.integers(0, n, 300) for n in FACTOR_SIZES], axis=1)
    images = render(f, size)[:, 0]
    quarter = f.copy()
    quarter[:, 2], quarter[:, 3], quarter[:, 4] = (f[:, 2] + 10) % 40, f[:, 4], 31 - f[:, 3]
    assert np.array_equal(render(quarter, size)[:, 0], np.rot90(images, 1, axes=(1, 2)))
    half = f.copy()
    half[:, 2], half[:, 3], half[:, 4] = (f[:, 2] + 20) % 40, 31 - f[:, 3], 31 - f[:, 4]
    assert np.array_equal(render(half, size)[:, 0], np.rot90(images, 2, axes=(1, 2)))


def test_a_square_looks_the_same_after_a_quarter_turn_and_a_heart_does_not():
    # Square: 4-fold symmetric, so rotation k + 10 at (kx, ky) is the quarter-turned image of rotation k at
    # (31 - ky, kx): same pixel count, same shape up to the grid. The heart is not symmetric under a quarter turn.
    square = render(_grid_rows(shape=0, scale=5, pos_x=15, pos_y=15), 64)[:, 0].reshape(40, -1).sum(1)
    assert np.allclose(square[:10], square[10:20], rtol=0.05)
    heart = render(_grid_rows(shape=2, scale=5, pos_x=15, pos_y=15), 64)[:, 0]
    assert (heart[0] != heart[10]).sum() > 20 and (heart[0] != heart[20]).sum() > 20


@pytest.mark.parametrize(("shape", "area"), [
    (0, 1.4**2),  # square |u|, |v| <= 0.7: side 1.4 in radius units
    (1, math.pi * 0.5),  # ellipse with semi-axes 1 and 0.5: pi a b
    (2, 3.6601 / 1.34**2),  # heart: area of (x^2+y^2-1)^3 <= x^2 y^3 is 3.6601 (4001^2 grid over [-1.6, 1.6]^2)
])
def test_pixel_counts_match_the_area_of_the_shape_at_every_scale(shape, area):
    counts = []
    for scale in range(6):
        images = render(_grid_rows(shape=shape, scale=scale, pos_x=15, pos_y=16), 64)
        mean_count = images.reshape(40, -1).sum(1).mean()  # averaging over rotations cancels grid error
        radius = SCALES[scale] * 0.2 * 64
        assert mean_count == pytest.approx(area * radius**2, rel=0.03)
        counts.append(mean_count)
    assert all(a < b for a, b in zip(counts, counts[1:]))  # larger scale, more pixels


@pytest.mark.parametrize("shape", [0, 1])
def test_position_moves_the_centroid_to_the_stated_centre(shape):
    # Square and ellipse are point-symmetric, so the centroid of their pixels is their centre (up to the grid).
    for kx, ky in ((0, 0), (31, 5), (12, 27)):
        rows = _grid_rows(shape=shape, scale=2, pos_x=kx, pos_y=ky)
        for image in render(rows[::7], 64)[:, 0]:
            r, c = np.nonzero(image)
            cx, cy = (0.2 + 0.6 * POSITIONS[kx]) * 64, (0.2 + 0.6 * POSITIONS[ky]) * 64
            assert abs(c.mean() + 0.5 - cx) < 0.5 and abs(r.mean() + 0.5 - cy) < 0.5


def test_every_shape_fits_the_canvas_at_the_largest_scale():
    for shape in range(3):
        for kx, ky in ((0, 0), (31, 31), (0, 31)):
            images = render(_grid_rows(shape=shape, scale=5, pos_x=kx, pos_y=ky), 32)[:, 0]
            area = images.reshape(40, -1).sum(1)
            centred = render(_grid_rows(shape=shape, scale=5, pos_x=15, pos_y=15), 32)[:, 0].reshape(40, -1).sum(1)
            # nothing is clipped at the border: the pixel count is that of a shape away from the border, up to grid
            assert np.allclose(area.mean(), centred.mean(), rtol=0.05)


@pytest.mark.parametrize("options", [{"size": 48}, {"num_samples": 5}, {"seed": -1}, {"num_samples": 10**7}])
def test_bad_options_raise_one_line_user_errors(options):
    with pytest.raises(ValueError) as info:
        load_dataset("sprites", **options)
    assert "\n" not in str(info.value)


def test_render_rejects_out_of_range_factors():
    with pytest.raises(ValueError, match="factor indices"):
        render([[3, 0, 0, 0, 0]], 64)
