"""What the methods share: running networks, optimizer steps, config rules,
and the pictures of the models that have an encoder (VAE, AAE, ALI).

Every method keeps one optimizer per trained entry of `state.params` (Adam
is elementwise, so a joint loss over several networks gives each the update
it would get on its own), BatchNorm statistics per network in
`state.batch_stats`, and samples with BatchNorm in eval mode.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vi_gen import errors, images
from vi_gen.state import PyTree, TrainState, copy_tree, ema_update

OLD_GENERATOR_MODES = ('phase', 'lagged')
# The square of the latent scatter plot: +-4 standard deviations of N(0, I).
LATENT_EXTENT = 4.0


def adam(optim_config) -> optax.GradientTransformation:
  """Adam with the reference's defaults (lr 2e-4, b1 0.5)."""
  return optax.adam(
    optim_config.lr,
    b1=optim_config.b1,
    b2=optim_config.b2,
    eps=optim_config.eps,
  )


def apply(module: nn.Module, params, batch_stats, *inputs, train: bool):
  """Runs a network; returns (outputs, updated BatchNorm statistics)."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train or not batch_stats:
    return module.apply(variables, *inputs, train=train), batch_stats
  outputs, updates = module.apply(
    variables, *inputs, train=True, mutable=['batch_stats']
  )
  return outputs, updates['batch_stats']


def init_networks(
  key: jax.Array, networks: dict[str, tuple[nn.Module, tuple]]
) -> tuple[dict[str, PyTree], dict[str, PyTree]]:
  """Params and BatchNorm statistics ({} without BatchNorm) per network.

  Args:
    key: split into one key per network.
    networks: name -> (module, example inputs).
  """
  keys = jax.random.split(key, len(networks))
  params, batch_stats = {}, {}
  for k, (name, (module, inputs)) in zip(keys, networks.items(), strict=True):
    variables = module.init(k, *inputs, train=False)
    params[name] = variables['params']
    batch_stats[name] = variables.get('batch_stats', {})
  return params, batch_stats


def new_state(
  params: dict[str, PyTree],
  batch_stats: dict[str, PyTree],
  txs: dict[str, optax.GradientTransformation],
  old_params: dict[str, PyTree] | None = None,
  ema_params: dict[str, PyTree] | None = None,
) -> TrainState:
  """Step 0, one optimizer state per entry of `params`."""
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_states={name: txs[name].init(p) for name, p in params.items()},
    old_params=old_params or {},
    ema_params=ema_params or {},
  )


def descend(
  txs: dict[str, optax.GradientTransformation],
  loss_fn: Callable,
  params: dict[str, PyTree],
  opt_states: dict[str, PyTree],
):
  """One optimizer step of every entry of `params` on `loss_fn`.

  Args:
    txs: optimizer per name.
    loss_fn: params -> (scalar loss, aux); differentiated w.r.t. all of
      `params` (only the names given here are trained).
    params: name -> params of the networks this step trains.
    opt_states: name -> optimizer state, for the same names.

  Returns:
    (params, opt_states, loss, aux, global gradient norm).
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  new_params, new_opt_states = {}, {}
  for name, p in params.items():
    updates, new_opt_states[name] = txs[name].update(
      grads[name], opt_states[name], p
    )
    new_params[name] = optax.apply_updates(p, updates)
  return new_params, new_opt_states, loss, aux, optax.tree.norm(grads)


def unrolled_scan(step: Callable, carry, xs=None, length: int | None = None):
  """`jax.lax.scan` unrolled at trace time (steps per phase are few).

  On XLA:CPU the loop that `jax.lax.scan` emits (even with `unroll=True`)
  made the ALI MNIST iteration (1 D step, 1 E/G step) about 8x slower than
  the same steps unrolled: 3.6 s against 0.46 s.

  Args:
    step: (carry, x) -> (carry, y), as for `jax.lax.scan`.
    carry: the initial carry.
    xs: a pytree of arrays scanned over their leading axis, or None.
    length: the number of steps when `xs` is None.

  Returns:
    (final carry, the stacked ys).
  """
  if xs is not None:
    length = jax.tree.leaves(xs)[0].shape[0]
  ys = []
  for i in range(length):
    x = None if xs is None else jax.tree.map(lambda a, i=i: a[i], xs)
    carry, y = step(carry, x)
    ys.append(y)
  return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys)


def ema_init(params: PyTree, name: str, decay: float) -> dict[str, PyTree]:
  """{name: a copy of params} when the EMA is on (decay > 0), else {}."""
  return {name: copy_tree(params)} if decay else {}


def ema_step(
  ema_params: dict[str, PyTree], params: PyTree, name: str, decay: float
) -> dict[str, PyTree]:
  if not decay:
    return ema_params
  return {name: ema_update(ema_params[name], params, decay)}


def sampling_params(state: TrainState, name: str) -> PyTree:
  """The EMA of network `name` when the run keeps one, else its params."""
  return state.ema_params.get(name, state.params[name])


def check_alternation(
  config, term: str, switch_off: str, uses_old: bool
) -> None:
  """The d_steps / g_steps / old_generator rules of the GAN and ALI.

  Args:
    config: the model config.
    term: what uses the old networks, for the error message.
    switch_off: the setting that turns that term off, for the message.
    uses_old: whether the term is on.
  """
  errors.require(
    config.d_steps >= 1 and config.g_steps >= 1,
    f'd_steps and g_steps must be >= 1, got {config.d_steps} and'
    f' {config.g_steps}.',
  )
  errors.require(
    config.old_generator in OLD_GENERATOR_MODES,
    f'old_generator must be one of {OLD_GENERATOR_MODES}, got'
    f' {config.old_generator!r}.',
  )
  errors.require(
    not (uses_old and config.old_generator == 'phase' and config.g_steps == 1),
    f"old_generator='phase' with g_steps=1 makes {term} and"
    ' its gradient exactly zero: the snapshot is taken at the start of the G'
    ' phase, so G == G^o on its only step. Use g_steps >= 2 (the'
    f" reference uses 2), old_generator='lagged', or {switch_off}.",
  )


def reconstruction_picture(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
  """Images: each original left of its reconstruction; points: the
  reconstructions (red) over the originals (grey)."""
  if x.ndim == 2:
    return images.picture(recon, x)
  pairs = np.stack([x, recon], axis=1).reshape(-1, *x.shape[1:])
  columns = 2 * int(np.ceil(np.sqrt(len(x) / 2)))
  return images.image_grid(pairs, columns=columns)


class LatentModel:
  """What every model that decodes z ~ N(0, I) shares (GAN, VAE, AAE,
  ALI): the prior, sampling, and the samples picture.

  Subclasses set `config` and the decoder/generator module under the name
  `decoder_name`; `mean` maps its raw output to a sample in the data's
  range.
  """

  config = None
  decoder_name = 'decoder'

  def mean(self, decoder_output: jax.Array) -> jax.Array:
    """The decoder's mean, in the data's range."""
    return decoder_output

  def latents(self, key: jax.Array, num: int) -> jax.Array:
    """z ~ N(0, I), the prior q(z) of every model here."""
    return jax.random.normal(key, (num, self.config.latent_dim))

  def _decode(self, params, state: TrainState, z: jax.Array) -> jax.Array:
    name = self.decoder_name
    out, _ = apply(
      getattr(self, name), params, state.batch_stats[name], z, train=False
    )
    return self.mean(out)

  def generate(self, state: TrainState, z: jax.Array) -> jax.Array:
    """Samples at z (the EMA decoder when enabled), BatchNorm in eval mode."""
    params = sampling_params(state, self.decoder_name)
    return self._decode(params, state, z)

  @functools.cached_property
  def _jitted_generate(self) -> Callable:
    return jax.jit(self.generate)

  def samples_picture(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> np.ndarray:
    """G(z) for fixed z: an image grid, or 2-D points over the data."""
    z = self.latents(key, self.config.num_grid_samples)
    samples = np.asarray(jax.device_get(self._jitted_generate(state, z)))
    return images.picture(samples, reference)


class EncoderDecoder(LatentModel):
  """What the models with an encoder share: reconstructing, and the
  reconstruction and latent pictures.

  Subclasses also set `encoder`; `code` maps its raw output to a code.
  """

  def code(self, encoder_output) -> jax.Array:
    """The point code E(x) (a Gaussian encoder's mean)."""
    return encoder_output

  def reconstruct(
    self, state: TrainState, x: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """(E(x), G(E(x))) with the live networks, BatchNorm in eval mode."""
    out, _ = apply(
      self.encoder,
      state.params['encoder'],
      state.batch_stats['encoder'],
      x,
      train=False,
    )
    codes = self.code(out)
    return codes, self._decode(state.params[self.decoder_name], state, codes)

  @functools.cached_property
  def _jitted_reconstruct(self) -> Callable:
    return jax.jit(self.reconstruct)

  def pictures(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> dict[str, np.ndarray]:
    """samples: G(z) for fixed z; reconstructions: G(E(x)) next to x for
    the fixed real examples; latents (2-D codes only): E(x) in red over
    prior samples in grey."""
    x = np.asarray(reference[: self.config.num_grid_samples])
    codes, recon = (np.asarray(a) for a in self._jitted_reconstruct(state, x))
    pictures = {
      'samples': self.samples_picture(state, key, reference),
      'reconstructions': reconstruction_picture(x, recon),
    }
    if codes.shape[-1] == 2:
      prior = np.asarray(self.latents(key, len(codes)))
      pictures['latents'] = images.scatter_plot(codes, prior, LATENT_EXTENT)
    return pictures
