"""Flax modules: the reference DCGAN (any power-of-two upsampling) and MLPs.

The DCGAN follows the reference code (paper.md §4.3): 5x5 kernels with stride
2, BatchNorm (momentum 0.9, eps 1e-5) + ReLU in G with a tanh output,
LeakyReLU(0.2) in D with BatchNorm on every layer but the first, weights drawn
from N(0, 0.02) and no bias on layers followed by BatchNorm. The same modules
give the 64x64 CelebA networks (widths 512-256-128-64 / 64-128-256-512) and
the 28x28 MNIST ones (a 7x7 base and two upsamplings).

The encoders (VAE, AAE, ALI) and the joint (x, z) discriminator (ALI) reuse
D's convolutional trunk, so an encoder is D with a code head instead of a
logit; the AAE's latent discriminator is `MLPDiscriminator` on z. Images
([H, W, C]) get the convolutional networks, points ([D]) the MLPs.

Every module computes in its `dtype` (`network.compute_dtype`: float32, or
bfloat16 for the matmul units of GPUs and TPUs) while its parameters and
BatchNorm statistics stay float32, and returns float32, so that the losses
and the GAN regularizer's G(z) - G^o(z) are computed in float32.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from vi_gen import layers

_INIT = nn.initializers.normal(stddev=0.02)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
COMPUTE_DTYPES = ('float32', 'bfloat16')


def _batch_norm(train: bool, dtype: Dtype) -> nn.BatchNorm:
  # Flax reduces the statistics in float32 and keeps them (and the scale
  # and bias) float32 whatever `dtype` is.
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=_BN_MOMENTUM,
    epsilon=_BN_EPSILON,
    dtype=dtype,
  )


def _stride2(
  features: int,
  kernel: int,
  lowering: str,
  use_bias: bool,
  dtype: Dtype,
  index: int,
  transpose: bool,
) -> nn.Module:
  """The `index`-th stride-2 'SAME' conv (transposed: upsampling) of its
  network, lowered as `lowering` ('phase': vi_gen/layers.py, 'native':
  flax's), computing in `dtype`.

  Named as the phase layer is under either lowering, so that the
  parameters sit at the same paths and a checkpoint resumes under both.
  """
  phase_layer = layers.ConvTranspose2x if transpose else layers.Conv2x
  name = f'{phase_layer.__name__}_{index}'
  if lowering == 'phase':
    return phase_layer(
      features,
      kernel_size=kernel,
      use_bias=use_bias,
      kernel_init=_INIT,
      dtype=dtype,
      name=name,
    )
  layer = nn.ConvTranspose if transpose else nn.Conv
  return layer(
    features,
    (kernel, kernel),
    strides=(2, 2),
    padding='SAME',
    use_bias=use_bias,
    kernel_init=_INIT,
    dtype=dtype,
    name=name,
  )


_conv_transpose = functools.partial(_stride2, transpose=True)
_conv = functools.partial(_stride2, transpose=False)


def _conv_trunk(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """D's trunk, flattened: a stride-2 conv per `module.widths`, LeakyReLU(0.2)
  and BatchNorm on every layer but the first (if `module.batch_norm`).

  Called inside `module`'s compact method, so the layers belong to (and are
  named in) `module`, as if written there.
  """
  h = x
  for i, features in enumerate(module.widths):
    normalize = module.batch_norm and i > 0
    # The first layer always has a bias; the others where no BatchNorm
    # follows and `hidden_bias` asks for one.
    use_bias = i == 0 or (module.hidden_bias and not module.batch_norm)
    h = _conv(
      features, module.kernel_size, module.lowering, use_bias, module.dtype, i
    )(h)
    if normalize:
      h = _batch_norm(train, module.dtype)(h)
    h = _leaky_relu(h)
  return h.reshape(h.shape[0], -1)


def _mlp(
  h: jax.Array, widths: Sequence[int], activation, dtype: Dtype
) -> jax.Array:
  """Dense layers with `activation`, computing in `dtype`; layers belong to
  the calling module."""
  for features in widths:
    h = activation(nn.Dense(features, dtype=dtype)(h))
  return h


def _logit(h: jax.Array, dtype: Dtype, kernel_init=_INIT) -> jax.Array:
  """The last Dense layer of a discriminator: a float32 logit [B]."""
  logit = nn.Dense(1, kernel_init=kernel_init, dtype=dtype)(h)[:, 0]
  return logit.astype(jnp.float32)


def _leaky_relu(h: jax.Array) -> jax.Array:
  return nn.leaky_relu(h, 0.2)


def _code_head(
  h: jax.Array, latent_dim: int, gaussian: bool, dtype: Dtype, kernel_init=_INIT
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """A float32 code [B, L], or the (mean, log-variance) of a Gaussian
  p(z|x)."""

  def head(h):
    dense = nn.Dense(latent_dim, kernel_init=kernel_init, dtype=dtype)
    return dense(h).astype(jnp.float32)

  mean = head(h)
  if not gaussian:
    return mean
  return mean, head(h)


class DCGANGenerator(nn.Module):
  """z [B, L] -> image [B, H, W, C] in [-1, 1].

  `widths[0]` is the width of the dense base of size H / 2**len(widths); each
  further width is one stride-2 transposed conv, and a last one maps to the
  image channels. `logits=True` returns the pre-tanh output instead (a
  Bernoulli decoder's logits).
  """

  widths: Sequence[int]
  output_shape: tuple[int, int, int]
  kernel_size: int = 5
  batch_norm: bool = True
  lowering: str = 'phase'  # See resolve_lowering.
  hidden_bias: bool = True
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.
  logits: bool = False

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
        h = _batch_norm(train, self.dtype)(h)
      return nn.relu(h)

    # Hidden layers: a bias only where no BatchNorm follows, if asked for
    # (the reference's Experiment 2 has none).
    hidden_bias = self.hidden_bias and not self.batch_norm
    h = nn.Dense(
      (height // scale) * (width // scale) * self.widths[0],
      use_bias=hidden_bias,
      kernel_init=_INIT,
      dtype=self.dtype,
    )(z)
    h = norm_act(h.reshape(z.shape[0], height // scale, width // scale, -1))
    for i, features in enumerate(self.widths[1:]):
      h = _conv_transpose(
        features, self.kernel_size, self.lowering, hidden_bias, self.dtype, i
      )(h)
      h = norm_act(h)
    last = len(self.widths) - 1
    h = _conv_transpose(
      channels, self.kernel_size, self.lowering, True, self.dtype, last
    )(h).astype(jnp.float32)
    return h if self.logits else jnp.tanh(h)


class DCGANDiscriminator(nn.Module):
  """image [B, H, W, C] -> logit [B]; one stride-2 conv per width."""

  widths: Sequence[int]
  kernel_size: int = 5
  batch_norm: bool = True
  lowering: str = 'phase'  # See resolve_lowering.
  hidden_bias: bool = True
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    h = _conv_trunk(self, x, train)
    return _logit(h, self.dtype)


class MLPGenerator(nn.Module):
  """z [B, L] -> point [B, D], for the 2-D mixtures; ReLU hidden layers."""

  widths: Sequence[int]
  output_dim: int = 2
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    del train  # No BatchNorm: the toy networks are small and plain.
    h = _mlp(z, self.widths, nn.relu, self.dtype)
    return nn.Dense(self.output_dim, dtype=self.dtype)(h).astype(jnp.float32)


class MLPDiscriminator(nn.Module):
  """point [B, D] -> logit [B]; LeakyReLU(0.2) hidden layers.

  Also the AAE's latent discriminator D(z), on codes [B, L].
  """

  widths: Sequence[int]
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    del train
    h = _mlp(x, self.widths, _leaky_relu, self.dtype)
    return _logit(h, self.dtype, nn.linear.default_kernel_init)


class DCGANEncoder(nn.Module):
  """image [B, H, W, C] -> code [B, L], or (mean, log-variance) if gaussian.

  D's layout (`DCGANDiscriminator`) with a code head instead of the logit.
  """

  widths: Sequence[int]
  latent_dim: int
  gaussian: bool = False
  kernel_size: int = 5
  batch_norm: bool = True
  lowering: str = 'phase'  # See resolve_lowering.
  hidden_bias: bool = True
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool = True
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    h = _conv_trunk(self, x, train)
    return _code_head(h, self.latent_dim, self.gaussian, self.dtype)


class MLPEncoder(nn.Module):
  """point [B, D] -> code [B, L], or (mean, log-variance) if gaussian."""

  widths: Sequence[int]
  latent_dim: int
  gaussian: bool = False
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool = True
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    del train
    h = _mlp(x, self.widths, _leaky_relu, self.dtype)
    return _code_head(
      h,
      self.latent_dim,
      self.gaussian,
      self.dtype,
      nn.linear.default_kernel_init,
    )


class DCGANJointDiscriminator(nn.Module):
  """(image [B, H, W, C], code [B, L]) -> logit [B], for ALI.

  D's conv trunk on x and an MLP on z, concatenated, then a joint MLP.
  """

  widths: Sequence[int]
  z_widths: Sequence[int]
  joint_widths: Sequence[int]
  kernel_size: int = 5
  batch_norm: bool = True
  lowering: str = 'phase'  # See resolve_lowering.
  hidden_bias: bool = True
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(
    self, x: jax.Array, z: jax.Array, train: bool = True
  ) -> jax.Array:
    hx = _conv_trunk(self, x, train)
    hz = _mlp(z, self.z_widths, _leaky_relu, self.dtype)
    h = _mlp(
      jnp.concatenate([hx, hz], -1),
      self.joint_widths,
      _leaky_relu,
      self.dtype,
    )
    return _logit(h, self.dtype)


class MLPJointDiscriminator(nn.Module):
  """(point [B, D], code [B, L]) -> logit [B]: an MLP on the concatenation."""

  widths: Sequence[int]
  dtype: Dtype = jnp.float32  # Computation; see the module docstring.

  @nn.compact
  def __call__(
    self, x: jax.Array, z: jax.Array, train: bool = True
  ) -> jax.Array:
    del train
    h = _mlp(jnp.concatenate([x, z], -1), self.widths, _leaky_relu, self.dtype)
    return _logit(h, self.dtype, nn.linear.default_kernel_init)


def _is_points(example_shape: tuple[int, ...]) -> bool:
  return len(example_shape) == 1


LOWERINGS = ('auto', 'phase', 'native')


def resolve_lowering(
  choice: str, example_shape: tuple[int, ...], platform: str | None = None
) -> str:
  """'phase' or 'native': `choice` itself, or for 'auto' the faster one on
  `platform` (default: JAX's default backend) at this image size.

  Measured (issue 14; whole GAN iterations, same networks): on XLA:CPU the
  phase layers are 2.5x faster at MNIST size and 30x or more at CelebA size; on
  an H200 they are 1.6-4.7x faster at 64x64 but 2x slower at 28x28. TPUs
  were not measured: their native convolutions are XLA's best-tuned path.

  Raises:
    ValueError: an unknown `choice`.
  """
  if choice not in LOWERINGS:
    raise ValueError(
      f'Unknown conv lowering {choice!r}; known: {", ".join(LOWERINGS)}.'
    )
  if choice != 'auto':
    return choice
  platform = platform or jax.default_backend()
  if platform == 'cpu':
    return 'phase'
  if platform == 'gpu':
    return 'phase' if example_shape[0] >= 64 else 'native'
  return 'native'


def compute_dtype(network_config) -> jnp.dtype:
  """The dtype the networks compute in, `network.compute_dtype` (one of
  COMPUTE_DTYPES): bfloat16 trades precision for the speed of the matmul
  units of GPUs and TPUs."""
  return jnp.dtype(network_config.compute_dtype)


def _conv_options(network_config, lowering: str) -> dict:
  return {
    'kernel_size': network_config.kernel_size,
    'batch_norm': network_config.batch_norm,
    'lowering': lowering,
    'hidden_bias': network_config.hidden_bias,
    'dtype': compute_dtype(network_config),
  }


def build_generator(
  network_config,
  example_shape: tuple[int, ...],
  logits: bool = False,
  lowering: str = 'phase',
) -> nn.Module:
  """G(z) (the decoder of the VAE and AAE): DCGAN for images, else an MLP.

  `logits=True` drops the image generator's tanh (Bernoulli decoders).
  """
  g_widths = tuple(network_config.g_widths)
  if _is_points(example_shape):
    return MLPGenerator(
      g_widths, example_shape[0], compute_dtype(network_config)
    )
  return DCGANGenerator(
    g_widths,
    output_shape=tuple(example_shape),
    logits=logits,
    **_conv_options(network_config, lowering),
  )


def build_encoder(
  network_config,
  example_shape: tuple[int, ...],
  latent_dim: int,
  gaussian: bool = False,
  lowering: str = 'phase',
) -> nn.Module:
  """E(x) with `network.e_widths`: a code, or (mean, logvar) if gaussian."""
  e_widths = tuple(network_config.e_widths)
  if _is_points(example_shape):
    return MLPEncoder(
      e_widths, latent_dim, gaussian, compute_dtype(network_config)
    )
  return DCGANEncoder(
    e_widths, latent_dim, gaussian, **_conv_options(network_config, lowering)
  )


def build_latent_discriminator(network_config) -> nn.Module:
  """The AAE's D(z) on codes: an MLP with `network.d_widths`."""
  return MLPDiscriminator(
    tuple(network_config.d_widths), compute_dtype(network_config)
  )


def build_joint_discriminator(
  network_config, example_shape: tuple[int, ...], lowering: str = 'phase'
) -> nn.Module:
  """ALI's D(x, z): conv trunk (`d_widths`) on x + MLP (`d_z_widths`) on z,
  joined by an MLP (`d_joint_widths`); for points, an MLP (`d_widths`) on
  the concatenation."""
  d_widths = tuple(network_config.d_widths)
  if _is_points(example_shape):
    return MLPJointDiscriminator(d_widths, compute_dtype(network_config))
  return DCGANJointDiscriminator(
    d_widths,
    tuple(network_config.d_z_widths),
    tuple(network_config.d_joint_widths),
    **_conv_options(network_config, lowering),
  )


def build_gan(
  network_config, example_shape: tuple[int, ...], lowering: str = 'phase'
) -> tuple[nn.Module, nn.Module]:
  """The generator and discriminator for data of `example_shape`.

  Images ([H, W, C]) get the DCGAN pair, points ([D]) the MLP pair.
  """
  generator = build_generator(network_config, example_shape, False, lowering)
  d_widths = tuple(network_config.d_widths)
  if _is_points(example_shape):
    return generator, MLPDiscriminator(d_widths, compute_dtype(network_config))
  return generator, DCGANDiscriminator(
    d_widths, **_conv_options(network_config, lowering)
  )
