"""The PNGs a run writes are for a person: large enough, and labelled."""

import numpy as np
from PIL import Image

from vi_gen import images


def test_a_grid_png_is_scaled_up_by_an_integer_under_its_step(tmp_path):
  rng = np.random.default_rng(0)
  grid = images.image_grid(rng.uniform(-1, 1, (64, 28, 28, 1)))
  assert grid.shape == (242, 242, 1)  # Too small in a viewer.
  path = tmp_path / 'samples' / 'step_0001500.png'
  images.save_png(str(path), grid, label='step 1500')
  png = np.asarray(Image.open(path))
  strip = images.LABEL_SIZE + 8
  assert png.shape == (strip + 3 * 242, 3 * 242)  # 726 >= 512, greyscale.
  # Nearest neighbour: every pixel of the grid becomes a 3x3 square.
  np.testing.assert_array_equal(
    png[strip:], np.repeat(np.repeat(grid[..., 0], 3, 0), 3, 1)
  )
  # The label is drawn: dark pixels on the white strip, near its left.
  text = png[:strip] < 128
  assert text.sum() > 50 and np.nonzero(text)[1].max() < 200


def test_a_wide_colour_picture_keeps_its_size_and_needs_no_label(tmp_path):
  picture = np.zeros((530, 530, 3), np.uint8)  # A 64x64 CelebA grid.
  images.save_png(str(tmp_path / 'a.png'), picture)
  np.testing.assert_array_equal(
    np.asarray(Image.open(tmp_path / 'a.png')), picture
  )
  scatter = images.scatter_plot(np.zeros((4, 2)), np.ones((4, 2)), 2.0)
  images.save_png(str(tmp_path / 'b.png'), scatter, label='step 2')
  assert Image.open(tmp_path / 'b.png').size == (
    512,
    512 + images.LABEL_SIZE + 8,
  )
