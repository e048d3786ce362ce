"""Pictures of samples: image grids and 2-D scatter plots, as uint8 arrays."""

import math
import os

import numpy as np
from PIL import Image


def image_grid(
  images: np.ndarray, columns: int | None = None, pad: int = 2
) -> np.ndarray:
  """[N, H, W, C] in [-1, 1] -> one uint8 [rows*(H+pad)+pad, ..., C] grid."""
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.full(
    (rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8
  )
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  for i, image in enumerate(pixels):
    top, left = (
      pad + (i // columns) * (h + pad),
      pad + (i % columns) * (w + pad),
    )
    grid[top : top + h, left : left + w] = image
  return grid


def scatter_plot(
  points: np.ndarray,
  reference: np.ndarray,
  extent: float,
  size: int = 256,
) -> np.ndarray:
  """2-D points (red) over reference points (grey), as uint8 [size, size, 3].

  The square [-extent, extent]^2 maps onto the picture; y points up.
  """
  canvas = np.full((size, size, 3), 255, np.uint8)
  for data, color in ((reference, (170, 170, 170)), (points, (200, 30, 30))):
    xy = np.round((np.asarray(data) / extent + 1.0) * 0.5 * (size - 1))
    xy = xy[np.all(np.isfinite(xy), axis=1)].astype(int)
    inside = np.all((xy >= 1) & (xy < size - 1), axis=1)
    col, row = xy[inside, 0], size - 1 - xy[inside, 1]
    for dr in (-1, 0, 1):
      for dc in (-1, 0, 1):
        canvas[row + dr, col + dc] = color
  return canvas


def save_png(path: str, image: np.ndarray) -> None:
  """Writes uint8 [H, W, C]; a single channel is saved as greyscale."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  if image.shape[-1] == 1:
    image = image[..., 0]
  Image.fromarray(image).save(path)


def picture(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Images as a grid; 2-D points as a scatter plot over `reference` points."""
  if samples.ndim == 4:
    return image_grid(samples)
  extent = 1.25 * float(np.max(np.abs(reference)))
  return scatter_plot(samples, reference, extent)
