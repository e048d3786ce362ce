"""Inception-v3 as used for FID, KID and IS, in Flax, with weights from a file.

The network is the "FID Inception" of pytorch-fid (`fid_inception_v3`), the
PyTorch port of TTUR's TensorFlow graph `inception-2015-12-05`: torchvision's
Inception-v3 with BatchNorm eps 1e-3, average pools that exclude padding
(`count_include_pad=False`, TensorFlow's behaviour) and a MAX pool in the
pool branch of the last block (Mixed_7c), 1008 output classes. Features are
pool3, the 2048-d global average of Mixed_7c; IS uses the 1008 logits.

Inputs are images in [-1, 1] (pytorch-fid maps its [0, 1] input to this
range); grey images are repeated to three channels; images are resized to
299x299 bilinearly with half-pixel centres and no antialiasing (pytorch-fid's
`F.interpolate(..., mode='bilinear', align_corners=False)`, the
"legacy PyTorch" mode of clean-fid).

Module and parameter names follow the PyTorch state dict (`Mixed_5b`,
`branch1x1`, `conv`, `bn`, `fc`), so `convert_inception.py` maps it mechanically.
Weights are stored as a flat `.npz` ('params/Mixed_5b/branch1x1/conv/kernel',
'batch_stats/.../bn/mean', ...) and loaded without pickle.
"""

import functools
import hashlib
import os
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vi_gen import errors

IMAGE_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
RESIZE_METHOD = (
  'bilinear, half-pixel centres, no antialias (jax.image.resize; as'
  " pytorch-fid's F.interpolate align_corners=False)"
)

Pads = Sequence[tuple[int, int]] | str


class BasicConv2d(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU."""

  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: tuple[int, int] = (1, 1)
  padding: Pads = 'VALID'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
      self.features,
      self.kernel,
      strides=self.strides,
      padding=self.padding,
      use_bias=False,
      name='conv',
    )(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _pad(kernel: tuple[int, int]) -> list[tuple[int, int]]:
  """'Same' padding for an odd kernel at stride 1."""
  return [(k // 2, k // 2) for k in kernel]


def _conv(features: int, kernel: tuple[int, int], name: str, **kw):
  """A BasicConv2d with 'same' padding at stride 1 unless told otherwise."""
  kw.setdefault('padding', _pad(kernel))
  return BasicConv2d(features, kernel, name=name, **kw)


def _avg_pool(x: jax.Array) -> jax.Array:
  """3x3, stride 1, padding 1, padded zeros not counted (TensorFlow)."""
  return nn.avg_pool(
    x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False
  )


def _max_pool_same(x: jax.Array) -> jax.Array:
  """3x3, stride 1, padding 1: the FID variant's pool in Mixed_7c."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_reduce(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = _conv(64, (1, 1), 'branch1x1')(x)
    b5 = _conv(48, (1, 1), 'branch5x5_1')(x)
    b5 = _conv(64, (5, 5), 'branch5x5_2')(b5)
    b3 = _conv(64, (1, 1), 'branch3x3dbl_1')(x)
    b3 = _conv(96, (3, 3), 'branch3x3dbl_2')(b3)
    b3 = _conv(96, (3, 3), 'branch3x3dbl_3')(b3)
    bp = _conv(self.pool_features, (1, 1), 'branch_pool')(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _conv(384, (3, 3), 'branch3x3', strides=(2, 2), padding='VALID')(x)
    bd = _conv(64, (1, 1), 'branch3x3dbl_1')(x)
    bd = _conv(96, (3, 3), 'branch3x3dbl_2')(bd)
    bd = _conv(96, (3, 3), 'branch3x3dbl_3', strides=(2, 2), padding='VALID')(
      bd
    )
    return jnp.concatenate([b3, bd, _max_pool_reduce(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.channels_7x7
    b1 = _conv(192, (1, 1), 'branch1x1')(x)
    b7 = _conv(c, (1, 1), 'branch7x7_1')(x)
    b7 = _conv(c, (1, 7), 'branch7x7_2')(b7)
    b7 = _conv(192, (7, 1), 'branch7x7_3')(b7)
    bd = _conv(c, (1, 1), 'branch7x7dbl_1')(x)
    bd = _conv(c, (7, 1), 'branch7x7dbl_2')(bd)
    bd = _conv(c, (1, 7), 'branch7x7dbl_3')(bd)
    bd = _conv(c, (7, 1), 'branch7x7dbl_4')(bd)
    bd = _conv(192, (1, 7), 'branch7x7dbl_5')(bd)
    bp = _conv(192, (1, 1), 'branch_pool')(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _conv(192, (1, 1), 'branch3x3_1')(x)
    b3 = _conv(320, (3, 3), 'branch3x3_2', strides=(2, 2), padding='VALID')(b3)
    b7 = _conv(192, (1, 1), 'branch7x7x3_1')(x)
    b7 = _conv(192, (1, 7), 'branch7x7x3_2')(b7)
    b7 = _conv(192, (7, 1), 'branch7x7x3_3')(b7)
    b7 = _conv(192, (3, 3), 'branch7x7x3_4', strides=(2, 2), padding='VALID')(
      b7
    )
    return jnp.concatenate([b3, b7, _max_pool_reduce(x)], axis=-1)


class InceptionE(nn.Module):
  pool: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = _conv(320, (1, 1), 'branch1x1')(x)
    b3 = _conv(384, (1, 1), 'branch3x3_1')(x)
    b3 = jnp.concatenate(
      [
        _conv(384, (1, 3), 'branch3x3_2a')(b3),
        _conv(384, (3, 1), 'branch3x3_2b')(b3),
      ],
      axis=-1,
    )
    bd = _conv(448, (1, 1), 'branch3x3dbl_1')(x)
    bd = _conv(384, (3, 3), 'branch3x3dbl_2')(bd)
    bd = jnp.concatenate(
      [
        _conv(384, (1, 3), 'branch3x3dbl_3a')(bd),
        _conv(384, (3, 1), 'branch3x3dbl_3b')(bd),
      ],
      axis=-1,
    )
    bp = _conv(192, (1, 1), 'branch_pool')(self.pool(x))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """images [B, H, W, 3] in [-1, 1] (any H, W >= 75) -> (pool3 [B, 2048],
  logits [B, 1008]); resizing is the caller's (see `preprocess`)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    valid = {'padding': 'VALID'}
    x = _conv(32, (3, 3), 'Conv2d_1a_3x3', strides=(2, 2), **valid)(x)
    x = _conv(32, (3, 3), 'Conv2d_2a_3x3', **valid)(x)
    x = _conv(64, (3, 3), 'Conv2d_2b_3x3')(x)
    x = _max_pool_reduce(x)
    x = _conv(80, (1, 1), 'Conv2d_3b_1x1', **valid)(x)
    x = _conv(192, (3, 3), 'Conv2d_4a_3x3', **valid)(x)
    x = _max_pool_reduce(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(_avg_pool, name='Mixed_7b')(x)
    x = InceptionE(_max_pool_same, name='Mixed_7c')(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    return pool3, nn.Dense(NUM_CLASSES, name='fc')(pool3)


def preprocess(images: jax.Array) -> jax.Array:
  """[B, H, W, C] in [-1, 1], C in {1, 3} -> [B, 299, 299, 3] (see module
  docstring)."""
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  shape = (images.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3)
  return jax.image.resize(images, shape, 'bilinear', antialias=False)


def sha256(path: str | os.PathLike) -> str:
  """The file's SHA-256, recorded with every number it produced."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(functools.partial(f.read, 1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def save_variables(path: str | os.PathLike, variables) -> None:
  """Writes {'params': ..., 'batch_stats': ...} as a flat float32 .npz."""
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep='/')
  with open(path, 'wb') as f:  # A file object: np.savez adds no suffix.
    np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


def check_variables(flat: dict[str, np.ndarray], source: str) -> None:
  """Raises errors.ConfigError unless `flat` holds exactly the network's
  variables ('params/...' and 'batch_stats/...' names), with their shapes."""
  expected = traverse_util.flatten_dict(abstract_variables(), sep='/')
  problems = [
    f'{k}: file {flat[k].shape if k in flat else None}, network {v.shape}'
    for k, v in expected.items()
    if k not in flat or flat[k].shape != v.shape
  ]
  problems += [f'{k}: not in the network' for k in flat.keys() - expected]
  if problems:
    raise errors.ConfigError(
      f'{source} does not hold FID Inception-v3 weights:\n  '
      + '\n  '.join(sorted(problems)[:10])
      + f'\n({len(problems)} in all.)'
    )


def load_variables(path: str | os.PathLike) -> dict:
  """Reads `save_variables`' file (no pickle) and checks it is complete.

  Raises:
    errors.ConfigError: the file is missing, or its arrays are not those of
      `FIDInceptionV3` (names or shapes).
  """
  if not os.path.isfile(path):
    raise errors.ConfigError(
      f'Inception weights {str(path)!r} not found. Convert the pytorch-fid'
      ' weights (pt_inception-2015-12-05-6726825d.pth) once with'
      ' `python -m vi_gen.evaluation.convert_inception --input=<.pth>'
      ' --output=<.npz>`.'
    )
  with np.load(path, allow_pickle=False) as f:
    flat = {k: f[k] for k in f.files}
  check_variables(flat, str(path))
  return traverse_util.unflatten_dict(
    {k: jnp.asarray(v) for k, v in flat.items()}, sep='/'
  )


@functools.cache
def abstract_variables() -> dict:
  """Shapes of the network's variables (no computation)."""
  x = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), x)


@jax.jit
def features_and_logits(
  variables: dict, images: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """pool3 features [B, 2048] and logits [B, 1008] of images in [-1, 1].

  Float32 matmuls on every backend (TPU defaults to bfloat16 passes).
  """
  with jax.default_matmul_precision('float32'):
    return FIDInceptionV3().apply(variables, preprocess(images))
