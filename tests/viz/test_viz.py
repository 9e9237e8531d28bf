"""Pictures: each kind of data gets a readable PNG, and image grids keep the images' values."""

import numpy as np
import pytest
import torch
from PIL import Image

import dulab
from dulab.data.base import DataSpec
from dulab.viz import image_grid, save_curves, save_samples


@pytest.mark.parametrize("data,model", [("discrete1d", "histogram"), ("discrete2d", "histogram"),
                                        ("digits_binary", "histogram"), ("digits_color", "histogram"),
                                        ("moons", "maf")])
def test_save_samples_writes_a_png_for_every_kind_of_data(data, model, tmp_path):
    ds = dulab.load_dataset(data)
    m = dulab.build_model(model, ds.spec)
    path = save_samples(m, ds, tmp_path / "s.png", num_samples=16, generator=torch.Generator().manual_seed(0))
    img = Image.open(path)
    assert img.format == "PNG" and min(img.size) >= 200


def test_text_samples_are_written_as_text_and_png(tmp_path):
    ds = dulab.load_dataset("text", max_chars=5000, seq_len=16)
    m = dulab.build_model("histogram", ds.spec, mode="independent")
    path = save_samples(m, ds, tmp_path / "t.png", num_samples=4, generator=torch.Generator().manual_seed(0))
    assert path.exists() and len(path.with_suffix(".txt").read_text().strip()) >= 16


def test_image_grid_maps_levels_to_grey_values():
    x = torch.tensor([[[[0, 1], [2, 3]]]])  # (1, 1, 2, 2), 4 levels
    grid = np.asarray(image_grid(x, num_levels=4, pad=0, min_size=2))
    assert grid.tolist() == [[0, 85], [170, 255]]


def test_image_grid_tiles_colour_images():
    spec = DataSpec((3, 4, 4), "discrete", 2)
    x = torch.ones(6, *spec.shape, dtype=torch.long)
    grid = image_grid(x, num_levels=2, nrow=3, pad=1, min_size=1)
    assert grid.size == (3 * 5 + 1, 2 * 5 + 1) and grid.mode == "RGB"


def test_curves_from_a_run(tmp_path):
    run = dulab.train("histogram", data="discrete1d", epochs=1, out_dir=tmp_path / "r", progress=False)
    (run.dir / "curves.png").unlink()
    assert save_curves(run.dir).exists()
