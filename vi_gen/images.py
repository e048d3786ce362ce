"""Pictures of samples: image grids and 2-D scatter plots, as uint8 arrays."""

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont


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


# A 28x28 MNIST grid is 242 px wide: too small to judge in an image viewer.
MIN_PNG_WIDTH = 512
LABEL_SIZE = 20  # Font size of the label, in pixels.


def save_png(path: str, image: np.ndarray, label: str = '') -> None:
  """Writes uint8 [H, W, C] (one channel as greyscale) for a viewer: scaled
  up by the smallest integer that makes it MIN_PNG_WIDTH wide or wider,
  nearest neighbour so that a pixel stays a sharp square, with `label` (the
  step) on a white strip above it."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  if image.shape[-1] == 1:
    image = image[..., 0]
  picture = Image.fromarray(image)
  scale = max(1, math.ceil(MIN_PNG_WIDTH / picture.width))
  picture = picture.resize(
    (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
  )
  if label:
    strip = LABEL_SIZE + 8
    labelled = Image.new(
      picture.mode, (picture.width, picture.height + strip), 'white'
    )
    labelled.paste(picture, (0, strip))
    font = ImageFont.load_default(LABEL_SIZE)  # Built in: no font file.
    ImageDraw.Draw(labelled).text((6, 4), label, fill='black', font=font)
    picture = labelled
  picture.save(path)


def picture(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Images as a grid; 2-D points as a scatter plot over `reference` points."""
  if samples.ndim == 4:
    return image_grid(samples)
  extent = 1.25 * float(np.max(np.abs(reference)))
  return scatter_plot(samples, reference, extent)


def line_plot(
  xs: np.ndarray,
  ys: np.ndarray,
  title: str = '',
  size: tuple[int, int] = (240, 360),
) -> np.ndarray:
  """A curve with its ranges labelled, as uint8 [height, width, 3].

  A picture, not only a TensorBoard scalar, so that it lands in the workdir
  as a PNG next to the other pictures. Non-finite points are skipped; the
  y range is padded so that a flat curve stays visible.
  """
  height, width = size
  left, right, top, bottom = 64, 12, 22, 22
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  keep = np.isfinite(xs) & np.isfinite(ys)
  xs, ys = xs[keep], ys[keep]
  image = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default(12)  # Built in: no font file needed.
  black, blue = (0, 0, 0), (30, 80, 200)
  draw.rectangle(
    (left, top, width - right, height - bottom), outline=(170, 170, 170)
  )
  draw.text((left, 4), title, fill=black, font=font)
  if xs.size:
    x_lo, x_hi = xs.min(), max(xs.max(), xs.min() + 1.0)
    pad = 0.05 * max(ys.max() - ys.min(), 1e-6 * max(1.0, abs(ys.max())))
    y_lo, y_hi = ys.min() - pad, ys.max() + pad
    cols = left + (xs - x_lo) / (x_hi - x_lo) * (width - right - left)
    rows = (
      height - bottom - (ys - y_lo) / (y_hi - y_lo) * (height - bottom - top)
    )
    points = list(zip(cols.tolist(), rows.tolist(), strict=True))
    if len(points) > 1:
      draw.line(points, fill=blue, width=2)
    col, row = points[-1]
    draw.ellipse((col - 2, row - 2, col + 2, row + 2), fill=blue)
    y_max, y_min = f'{ys.max():.5g}', f'{ys.min():.5g}'
    x_max = f'{xs.max():g}'
    labels = (
      (left - 4 - draw.textlength(y_max, font), rows.min() - 6, y_max),
      (left - 4 - draw.textlength(y_min, font), rows.max() - 6, y_min),
      (left, height - bottom + 4, f'{xs.min():g}'),
      (cols.max() - draw.textlength(x_max, font), height - bottom + 4, x_max),
    )
    for col, row, text in labels:
      draw.text((col, row), text, fill=black, font=font)
  return np.asarray(image)


def ellipse_plot(
  means: np.ndarray,
  covariances: np.ndarray,
  reference: np.ndarray,
  extent: float,
  sigmas: float = 2.0,
  size: int = 256,
) -> np.ndarray:
  """2-D Gaussians as `sigmas`-sigma ellipses over reference points.

  Grey: the data; red: the means; blue: the ellipses, from the eigen-
  decomposition of each full [K, 2, 2] covariance. Same square as
  `scatter_plot`: [-extent, extent]^2, y up.
  """
  image = Image.fromarray(scatter_plot(means, reference, extent, size))
  draw = ImageDraw.Draw(image)
  angles = np.linspace(0.0, 2.0 * np.pi, 65)
  circle = np.stack([np.cos(angles), np.sin(angles)])  # [2, 65]
  for mean, cov in zip(means, covariances, strict=True):
    eigvals, eigvecs = np.linalg.eigh(np.asarray(cov, np.float64))
    axes = eigvecs * np.sqrt(np.maximum(eigvals, 0.0))
    xy = np.asarray(mean)[:, None] + sigmas * axes @ circle
    pixels = (xy / extent + 1.0) * 0.5 * (size - 1)
    if np.all(np.isfinite(pixels)):
      points = list(
        zip(pixels[0].tolist(), (size - 1 - pixels[1]).tolist(), strict=True)
      )
      draw.line(points, fill=(30, 80, 200), width=1)
  return np.asarray(image)
