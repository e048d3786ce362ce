"""Flax modules: the reference DCGAN (any power-of-two upsampling) and MLPs.

The DCGAN follows the reference code (paper.md §4.3): 5x5 kernels with stride
2, BatchNorm (momentum 0.9, eps 1e-5) + ReLU in G with a tanh output,
LeakyReLU(0.2) in D with BatchNorm on every layer but the first, weights drawn
from N(0, 0.02) and no bias on layers followed by BatchNorm. The same modules
give the 64x64 CelebA networks (widths 512-256-128-64 / 64-128-256-512) and
the 28x28 MNIST ones (a 7x7 base and two upsamplings).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vi_gen import layers

_INIT = nn.initializers.normal(stddev=0.02)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _batch_norm(train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=_BN_MOMENTUM,
    epsilon=_BN_EPSILON,
  )


def _conv_transpose(features: int, kernel: int, fast: bool, use_bias: bool):
  if fast:
    return layers.ConvTranspose2x(
      features, kernel_size=kernel, use_bias=use_bias, kernel_init=_INIT
    )
  return nn.ConvTranspose(
    features,
    (kernel, kernel),
    strides=(2, 2),
    padding='SAME',
    use_bias=use_bias,
    kernel_init=_INIT,
  )


def _conv(features: int, kernel: int, fast: bool, use_bias: bool):
  if fast:
    return layers.Conv2x(
      features, kernel_size=kernel, use_bias=use_bias, kernel_init=_INIT
    )
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(2, 2),
    padding='SAME',
    use_bias=use_bias,
    kernel_init=_INIT,
  )


class DCGANGenerator(nn.Module):
  """z [B, L] -> image [B, H, W, C] in [-1, 1].

  `widths[0]` is the width of the dense base of size H / 2**len(widths); each
  further width is one stride-2 transposed conv, and a last one maps to the
  image channels.
  """

  widths: Sequence[int]
  output_shape: tuple[int, int, int]
  kernel_size: int = 5
  batch_norm: bool = True
  fast_conv: bool = True

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    height, width, channels = self.output_shape
    scale = 2 ** len(self.widths)
    if height % scale or width % scale:
      raise ValueError(
        f'Image size {height}x{width} is not divisible by 2**len(widths) ='
        f' {scale}; change network.g_widths.'
      )

    def norm_act(h):
      if self.batch_norm:
        h = _batch_norm(train)(h)
      return nn.relu(h)

    h = nn.Dense(
      (height // scale) * (width // scale) * self.widths[0],
      use_bias=not self.batch_norm,
      kernel_init=_INIT,
    )(z)
    h = norm_act(h.reshape(z.shape[0], height // scale, width // scale, -1))
    for features in self.widths[1:]:
      h = _conv_transpose(
        features, self.kernel_size, self.fast_conv, not self.batch_norm
      )(h)
      h = norm_act(h)
    h = _conv_transpose(channels, self.kernel_size, self.fast_conv, True)(h)
    return jnp.tanh(h)


class DCGANDiscriminator(nn.Module):
  """image [B, H, W, C] -> logit [B]; one stride-2 conv per width."""

  widths: Sequence[int]
  kernel_size: int = 5
  batch_norm: bool = True
  fast_conv: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    h = x
    for i, features in enumerate(self.widths):
      normalize = self.batch_norm and i > 0
      h = _conv(features, self.kernel_size, self.fast_conv, not normalize)(h)
      if normalize:
        h = _batch_norm(train)(h)
      h = nn.leaky_relu(h, 0.2)
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(1, kernel_init=_INIT)(h)[:, 0]


class MLPGenerator(nn.Module):
  """z [B, L] -> point [B, D], for the 2-D mixtures; ReLU hidden layers."""

  widths: Sequence[int]
  output_dim: int = 2

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    del train  # No BatchNorm: the toy networks are small and plain.
    h = z
    for features in self.widths:
      h = nn.relu(nn.Dense(features)(h))
    return nn.Dense(self.output_dim)(h)


class MLPDiscriminator(nn.Module):
  """point [B, D] -> logit [B]; LeakyReLU(0.2) hidden layers."""

  widths: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    del train
    h = x
    for features in self.widths:
      h = nn.leaky_relu(nn.Dense(features)(h), 0.2)
    return nn.Dense(1)(h)[:, 0]


def build_gan(
  network_config, example_shape: tuple[int, ...]
) -> tuple[nn.Module, nn.Module]:
  """The generator and discriminator for data of `example_shape`.

  Images ([H, W, C]) get the DCGAN pair, points ([D]) the MLP pair.
  """
  g_widths = tuple(network_config.g_widths)
  d_widths = tuple(network_config.d_widths)
  if len(example_shape) == 1:
    return (
      MLPGenerator(g_widths, output_dim=example_shape[0]),
      MLPDiscriminator(d_widths),
    )
  generator = DCGANGenerator(
    g_widths,
    output_shape=tuple(example_shape),
    kernel_size=network_config.kernel_size,
    batch_norm=network_config.batch_norm,
    fast_conv=network_config.fast_conv,
  )
  discriminator = DCGANDiscriminator(
    d_widths,
    kernel_size=network_config.kernel_size,
    batch_norm=network_config.batch_norm,
    fast_conv=network_config.fast_conv,
  )
  return generator, discriminator
