"""`network.compute_dtype='bfloat16'`: the networks compute in bfloat16 while
parameters, optimizer state, BatchNorm statistics, network outputs and hence
the losses stay float32, and the first iteration's losses stay close to the
float32 ones."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_gen import data, methods
from vi_gen.state import TrainState

MODELS = ('gan', 'vae', 'aae', 'ali')
ITERATIONS = 3
# Measured on the `test` presets (XLA:CPU), the relative difference of the
# first iteration's losses between bfloat16 and float32 is at most 3.1e-4
# (the GAN's g_loss; VAE 1e-6, AAE 2e-5, ALI 1e-4): bfloat16 rounds each
# activation by up to 0.2%, and the losses average these errors out. 1%
# leaves a margin of 30x for other platforms and library versions.
LOSS_RTOL = 1e-2


def make(
  model: str, compute_dtype: str, preset: str = 'test', lowering: str = 'auto'
):
  """The method of `model`'s `preset` computing in `compute_dtype`, its
  stride-2 convolutions lowered as `lowering`."""
  config = importlib.import_module(f'configs.{model}').get_config(preset)
  config.network.compute_dtype = compute_dtype
  config.run.conv_lowering = lowering
  return methods.get(config.model)(config, data.example_shape(config.data))


def batch(method, seed: int) -> jax.Array:
  rng = np.random.default_rng(seed)
  size = (
    method.batches_per_iteration,
    method.config.batch_size,
    *method.example_shape,
  )
  return jnp.asarray(rng.uniform(-1, 1, size), jnp.float32)


@functools.cache
def run(
  model: str, compute_dtype: str, iterations: int
) -> tuple[TrainState, TrainState, list[dict[str, float]]]:
  """(initial state, state after `iterations` jitted iterations, the
  metrics of each iteration)."""
  method = make(model, compute_dtype)
  initial = method.init(jax.random.key(0))
  iteration = jax.jit(method.iteration)
  state, history = initial, []
  for i in range(iterations):
    state, metrics = iteration(state, batch(method, i), jax.random.key(i))
    history.append({k: float(v) for k, v in metrics.items()})
  return initial, state, history


def float_dtypes(tree) -> set[str]:
  return {
    str(x.dtype)
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(x.dtype, jnp.floating)
  }


def matmul_dtypes(jaxpr) -> list[tuple[str, str]]:
  """(primitive, dtype of its first operand) for every convolution and
  dot in `jaxpr` and the jaxprs nested in it (custom VJPs, ...)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ('conv_general_dilated', 'dot_general'):
      found.append((eqn.primitive.name, str(eqn.invars[0].aval.dtype)))
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple | list) else (value,):
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          found += matmul_dtypes(sub)
  return found


@pytest.mark.parametrize('model', MODELS)
def test_bfloat16_keeps_state_float32_and_metrics_finite(model):
  _, state, history = run(model, 'bfloat16', ITERATIONS)
  assert int(state.step) == ITERATIONS
  for field in ('params', 'opt_states', 'batch_stats', 'old_params'):
    assert float_dtypes(getattr(state, field)) <= {'float32'}, field
  assert float_dtypes(state.params) == {'float32'}
  assert float_dtypes(state.batch_stats) == {'float32'}
  for metrics in history:
    assert all(np.isfinite(v) for v in metrics.values()), metrics


@pytest.mark.parametrize('model', MODELS)
def test_bfloat16_starts_from_float32_params_and_losses_stay_close(model):
  """Same initial state; the first iteration's losses within LOSS_RTOL."""
  initial, _, history = run(model, 'bfloat16', ITERATIONS)
  initial32, _, history32 = run(model, 'float32', 1)
  jax.tree.map(np.testing.assert_array_equal, initial, initial32)
  losses = [name for name in history32[0] if name.endswith('loss')]
  assert losses
  for name in losses:
    np.testing.assert_allclose(
      history[0][name], history32[0][name], rtol=LOSS_RTOL, err_msg=name
    )


@pytest.mark.parametrize(
  'preset,lowering', [('test', 'phase'), ('test', 'native'), ('toy', 'auto')]
)
@pytest.mark.parametrize('model', MODELS)
def test_every_network_computes_in_bfloat16_and_returns_float32(
  model, preset, lowering
):
  """Every convolution and dot of every network (train mode, with the
  BatchNorm updates) takes bfloat16 operands, with either lowering of the
  stride-2 convolutions; the outputs (images, codes, logits) are float32."""
  method = make(model, 'bfloat16', preset, lowering)
  state = method.init(jax.random.key(0))
  for name, (module, inputs) in method.networks.items():
    variables = {
      'params': state.params[name],
      'batch_stats': state.batch_stats[name],
    }

    def apply(variables, *inputs, module=module):
      return module.apply(
        variables, *inputs, train=True, mutable=['batch_stats']
      )

    closed = jax.make_jaxpr(apply)(variables, *inputs)
    found = matmul_dtypes(closed.jaxpr)
    assert found, name
    assert {dtype for _, dtype in found} == {'bfloat16'}, (name, found)
    # On images every network but the AAE's D(z) reads or draws x.
    if preset == 'test' and not (model == 'aae' and name == 'discriminator'):
      assert 'conv_general_dilated' in {p for p, _ in found}, name
    outputs, updates = jax.eval_shape(apply, variables, *inputs)
    assert float_dtypes(outputs) == {'float32'}, name
    assert float_dtypes(updates) <= {'float32'}, name
