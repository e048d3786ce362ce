"""The fast stride-2 layers equal the flax layers they replace."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import gan as gan_config
from vi_gen import layers, networks
from vi_gen.methods.gan import GAN

TOL = {'atol': 1e-5, 'rtol': 1e-5}

# (kernel_size, height, width, in_channels, features). Transposed
# convolutions (the 'up' layer, the 'down' layer's input gradient) with at
# most 4 output channels take the col2im form, the others the phase form.
CASES = [
  (5, 7, 7, 3, 8),
  (5, 4, 4, 8, 1),
  (5, 5, 8, 1, 4),
  (5, 14, 9, 4, 3),
  (5, 1, 1, 2, 2),
  (4, 7, 7, 3, 4),
  (4, 4, 6, 2, 3),
  (3, 5, 4, 2, 3),
  (2, 3, 3, 2, 2),
  (6, 5, 6, 2, 3),
  (5, 5, 6, 6, 5),
]


def _pair(kind: str, k: int, features: int) -> tuple[nn.Module, nn.Module]:
  """(fast layer, flax reference) for 'up' or 'down'."""
  if kind == 'up':
    return (
      layers.ConvTranspose2x(features, k),
      nn.ConvTranspose(features, (k, k), strides=(2, 2), padding='SAME'),
    )
  return (
    layers.Conv2x(features, k),
    nn.Conv(features, (k, k), strides=(2, 2), padding='SAME'),
  )


def _setup(kind: str, case: tuple[int, ...], batch: int = 2):
  """Layers, params (with a nonzero bias), input and output probe.

  NumPy draws the arrays: random draws of new shapes in JAX compile, which
  would dominate the run time of this file.
  """
  k, h, w, c, features = case
  layer, ref = _pair(kind, k, features)
  rng = np.random.default_rng(0)
  params = {
    'params': {
      # Scaled as flax initialises it, so that outputs are O(1).
      'kernel': (
        rng.normal(size=(k, k, c, features)) / np.sqrt(k * k * c)
      ).astype(np.float32),
      'bias': rng.normal(size=(features,)).astype(np.float32),
    }
  }
  x = rng.normal(size=(batch, h, w, c)).astype(np.float32)
  out_shape = jax.eval_shape(ref.apply, params, x).shape
  probe = rng.normal(size=out_shape).astype(np.float32)
  return layer, ref, params, x, probe


def _value_and_grads(module: nn.Module):
  """(params, x, probe) -> output, grads of <probe, output> w.r.t. params, x."""

  def f(params, x, probe):
    def loss(params, x):
      return jnp.sum(probe * module.apply(params, x))

    return module.apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)

  return f


def _assert_trees_close(actual, expected) -> None:
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, **TOL), actual, expected
  )


@pytest.mark.parametrize('kind', ['up', 'down'])
@pytest.mark.parametrize('use_bias', [True, False])
def test_init_matches_flax(kind, use_bias):
  layer, ref = _pair(kind, 5, 6)
  layer = layer.clone(use_bias=use_bias)
  ref = ref.clone(use_bias=use_bias)
  x = jnp.ones((1, 4, 4, 3))
  _assert_trees_close(
    layer.init(jax.random.key(3), x), ref.init(jax.random.key(3), x)
  )


@pytest.mark.parametrize('kind', ['up', 'down'])
@pytest.mark.parametrize('case', CASES, ids=str)
def test_jit_output_and_grads_match_flax(kind, case):
  layer, ref, params, x, probe = _setup(kind, case)
  (y, grads) = jax.jit(_value_and_grads(layer))(params, x, probe)
  (y_ref, ref_grads) = jax.jit(_value_and_grads(ref))(params, x, probe)
  k, h, w = case[:3]
  expected_size = (2 * h, 2 * w) if kind == 'up' else (-(-h // 2), -(-w // 2))
  assert y_ref.shape[1:3] == expected_size
  assert y.shape == y_ref.shape
  _assert_trees_close((y, grads), (y_ref, ref_grads))


@pytest.mark.parametrize('features', [1, 6])
@pytest.mark.parametrize('out_size', [(8, 6), (7, 5)], ids=str)
@pytest.mark.parametrize('pad_before', [(1, 2), (3, 3), (4, 0)], ids=str)
def test_both_forms_equal_the_input_dilated_convolution(
  features, out_size, pad_before
):
  """`_phase_conv` and `_col2im_conv` against the convolution they stand
  for, XLA's own on the input with zeros between its pixels."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
  kernel = rng.normal(size=(5, 4, 3, features)).astype(np.float32)
  # The dilated input has 2n - 1 pixels; the padding after fixes the size.
  sizes = zip(pad_before, out_size, x.shape[1:3], (5, 4), strict=True)
  padding = [
    (before, out - (2 * n - 1) - before + k - 1) for before, out, n, k in sizes
  ]
  expected = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    padding,
    lhs_dilation=(2, 2),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  for form in (layers._phase_conv, layers._col2im_conv):
    np.testing.assert_allclose(
      form(x, kernel, pad_before, out_size), expected, **TOL
    )


@pytest.mark.parametrize('features,convolutions', [(4, 0), (5, 4)])
def test_few_features_take_the_col2im_form(features, convolutions):
  """Up to 4 output channels: no convolution at all; more: four."""
  layer = layers.ConvTranspose2x(features, 5)
  x = jnp.ones((1, 4, 4, 3))
  params = layer.init(jax.random.key(0), x)
  program = str(jax.make_jaxpr(layer.apply)(params, x))
  assert program.count('conv_general_dilated') == convolutions


@pytest.mark.parametrize('kind', ['up', 'down'])
def test_eager_output_and_grads_match_flax(kind):
  layer, ref, params, x, probe = _setup(kind, CASES[0])
  _assert_trees_close(
    _value_and_grads(layer)(params, x, probe),
    _value_and_grads(ref)(params, x, probe),
  )


@pytest.mark.parametrize('kind', ['up', 'down'])
def test_batch_sharded_over_mesh_matches_flax(kind):
  mesh = jax.make_mesh(
    (4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
  )
  batch_sharding = NamedSharding(mesh, P('data'))
  layer, ref, params, x, probe = _setup(kind, (5, 7, 7, 3, 4), batch=8)
  params = jax.device_put(params, NamedSharding(mesh, P()))
  x = jax.device_put(x, batch_sharding)
  probe = jax.device_put(probe, batch_sharding)
  y, grads = jax.jit(_value_and_grads(layer))(params, x, probe)
  y_ref, ref_grads = jax.jit(_value_and_grads(ref))(params, x, probe)
  assert y.sharding.is_equivalent_to(batch_sharding, y.ndim)
  assert grads[1].sharding.is_equivalent_to(batch_sharding, x.ndim)
  _assert_trees_close((y, grads), (y_ref, ref_grads))


def test_grad_of_grad_matches_flax():
  """The custom VJP of `Conv2x` is itself differentiable."""
  layer, ref, params, x, probe = _setup('down', CASES[0])

  def input_grad_norm(module):
    def f(params, x):
      grad_x = _value_and_grads(module)(params, x, probe)[1][1]
      return jnp.sum(grad_x**2)

    return jax.jit(jax.grad(f))

  _assert_trees_close(
    input_grad_norm(layer)(params, x), input_grad_norm(ref)(params, x)
  )


@pytest.mark.parametrize('module', [layers.ConvTranspose2x, layers.Conv2x])
def test_rejects_kernel_size_one(module):
  with pytest.raises(ValueError, match='kernel_size'):
    module(4, 1).init(jax.random.key(0), jnp.ones((1, 4, 4, 2)))


# bfloat16 keeps 8 significant bits: one rounding is up to 2**-9 of a value
# (0.2%). Measured on these cases against flax's layers in bfloat16 (XLA:CPU),
# the outputs are equal and the gradients differ by at most 0.45% of their
# largest entry (as much as flax's bfloat16 layers differ from float32
# ones); 2% allows about 4x that.
BF16_TOL = 2e-2


def _assert_trees_close_bf16(actual, expected) -> None:
  """Each leaf within BF16_TOL of the largest |entry| of its expected leaf."""

  def close(a, e):
    a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
    np.testing.assert_allclose(a, e, rtol=0, atol=BF16_TOL * np.abs(e).max())

  jax.tree.map(close, actual, expected)


@pytest.mark.parametrize('kind', ['up', 'down'])
@pytest.mark.parametrize(
  'case', [CASES[0], CASES[3], CASES[6], CASES[7]], ids=str
)
def test_bfloat16_output_and_grads_match_flax_in_bfloat16(kind, case):
  """`dtype=bfloat16` computes in bfloat16 as flax's layers do: bfloat16
  output, float32 parameters and parameter gradients."""
  layer, ref, params, x, probe = _setup(kind, case)
  layer = layer.clone(dtype=jnp.bfloat16)
  ref = ref.clone(dtype=jnp.bfloat16)
  assert jax.tree.map(lambda p: p.dtype, layer.init(jax.random.key(0), x)) == {
    'params': {'kernel': jnp.float32, 'bias': jnp.float32}
  }
  y, grads = jax.jit(_value_and_grads(layer))(params, x, probe)
  y_ref, ref_grads = jax.jit(_value_and_grads(ref))(params, x, probe)
  assert y.dtype == y_ref.dtype == jnp.bfloat16
  assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(
    lambda g: g.dtype, ref_grads
  )
  _assert_trees_close_bf16((y, grads), (y_ref, ref_grads))


@pytest.mark.parametrize(
  'choice,shape,platform,expected',
  [
    ('auto', (28, 28, 1), 'cpu', 'phase'),
    ('auto', (64, 64, 3), 'cpu', 'phase'),
    ('auto', (64, 64, 3), 'gpu', 'phase'),
    ('auto', (28, 28, 1), 'gpu', 'native'),
    ('auto', (64, 64, 3), 'tpu', 'native'),
    ('native', (64, 64, 3), 'cpu', 'native'),
    ('phase', (28, 28, 1), 'gpu', 'phase'),
  ],
)
def test_conv_lowering_per_platform(choice, shape, platform, expected):
  """'auto' follows issue 14's measurements; an explicit choice stands."""
  assert networks.resolve_lowering(choice, shape, platform) == expected


def test_conv_lowering_builds_the_chosen_layers():
  """The GAN's generator runs the phase layers or flax's transposed convs
  (input-dilated convolutions), with the same parameter shapes either way
  (so a checkpoint loads under both)."""
  config = gan_config.get_config('test')
  shapes, programs = {}, {}
  for lowering in ('phase', 'native'):
    config.run.conv_lowering = lowering
    generator = GAN(config, (28, 28, 1)).networks['generator'][0]
    z = jnp.zeros((2, config.latent_dim))
    variables = jax.eval_shape(generator.init, jax.random.key(0), z)
    shapes[lowering] = jax.tree.map(jnp.shape, variables)
    programs[lowering] = str(
      jax.make_jaxpr(generator.init)(jax.random.key(0), z)
    )
  assert shapes['phase'] == shapes['native']
  assert 'lhs_dilation=(2, 2)' in programs['native']
  assert 'lhs_dilation=(2, 2)' not in programs['phase']
  with pytest.raises(ValueError, match='Unknown conv lowering'):
    networks.resolve_lowering('cudnn', (28, 28, 1), 'cpu')
