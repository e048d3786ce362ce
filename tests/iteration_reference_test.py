"""Each adversarial model's iteration against a hand-written one.

The hand-written iterations below use only the Flax modules, `jax.grad` of
the public losses of `vi_gen.losses`, the paper's schedule and optax's Adam:
no code of `vi_gen.players` or `vi_gen.methods`. On 2-D data the networks
are plain MLPs (no BatchNorm), so the schedule is all there is to get
right: which networks each step trains, against which version of the
others, on which z, and which old generator the regularizer pulls towards.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vi_gen import data, losses, methods

B = 16  # Batch size (the 2-D models).
STEPS = 2  # Iterations compared.


def small_config(model: str, **overrides):
  config = importlib.import_module(f'configs.{model}').get_config('toy')
  config.batch_size = B
  for name in ('g_widths', 'd_widths', 'e_widths'):
    if name in config.network:
      config.network[name] = (16, 16)
  for name, value in overrides.items():
    *path, last = name.split('.')
    node = config
    for p in path:
      node = node[p]
    node[last] = value
  return config


def adam(config):
  o = config.optim
  return optax.adam(o.lr, b1=o.b1, b2=o.b2, eps=o.eps)


def step(tx, loss_fn, params, opt_state):
  grads = jax.grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def batches(method, seed):
  rng = np.random.default_rng(seed)
  shape = (
    method.batches_per_iteration,
    method.config.batch_size,
    *method.example_shape,
  )
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def run_method(method, state, steps=STEPS):
  iteration = jax.jit(method.iteration)
  for i in range(steps):
    state, _ = iteration(state, batches(method, i), jax.random.key(10 + i))
  return state


def assert_close(got, want):
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def differs(a, b) -> bool:
  return any(
    not np.allclose(x, y, rtol=1e-3, atol=1e-5)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


# ------------------------------------------------------------------- GAN ---


def hand_gan(config, method, state, steps=STEPS):
  """The GAN of the paper (d_steps D steps; G^o; g_batches x g_steps G
  steps), written out."""
  g, d = (method.networks[n][0] for n in ('generator', 'discriminator'))
  tx = adam(config)
  G, D = state.params['generator'], state.params['discriminator']
  G_old = state.old_params['generator']
  g_opt, d_opt = tx.init(G), tx.init(D)
  L, n = config.latent_dim, config.batch_size

  def gen(params, z):
    return g.apply({'params': params}, z)

  def disc(params, x):
    return d.apply({'params': params}, x)

  for i in range(steps):
    real = batches(method, i)
    keys = jax.random.split(jax.random.key(10 + i), config.d_steps + 1)
    for k in range(config.d_steps):
      fake = gen(G, jax.random.normal(keys[k], (n, L)))
      D, d_opt = step(
        tx,
        lambda p, x=real[k], f=fake: losses.discriminator_loss(
          disc(p, x), disc(p, f)
        ),
        D,
        d_opt,
      )
    snapshot = G
    target = snapshot if config.old_generator == 'phase' else G_old
    zs = jax.random.normal(keys[-1], (config.g_batches * n, L))
    for z in zs.reshape(config.g_batches, n, L):
      old_fake = gen(target, z)
      for _ in range(config.g_steps):

        def g_loss(p, z=z, old_fake=old_fake, D=D):
          fake = gen(p, z)
          adversarial = losses.generator_loss(disc(D, fake))
          return adversarial + config.reg_weight * jnp.mean(
            (fake - old_fake) ** 2
          )

        G, g_opt = step(tx, g_loss, G, g_opt)
    G_old = snapshot
  return {'generator': G, 'discriminator': D}


@pytest.mark.parametrize(
  'overrides',
  [
    dict(old_generator='phase'),
    dict(old_generator='lagged'),
    dict(old_generator='lagged', g_steps=1, reg_weight=50.0),
    dict(old_generator='phase', d_steps=5, g_batches=5, reg_weight=50.0),
  ],
  ids=['phase', 'lagged', 'lagged-1-step', 'experiment-2-schedule'],
)
def test_gan_iteration_matches_the_hand_written_one(overrides):
  config = small_config('gan', **overrides)
  method = methods.get('gan')(config, data.example_shape(config.data))
  state = method.init(jax.random.key(0))
  got = run_method(method, state)
  assert_close(got.params, hand_gan(config, method, state))


def test_experiment_2_preset_iteration_matches_the_hand_written_one():
  """The mnist_exp2 preset (no BatchNorm, no hidden biases, 5 D steps,
  5 z batches x 2 G steps towards one G^o) at its image shape, networks
  narrowed."""
  config = importlib.import_module('configs.gan').get_config('mnist_exp2')
  config.batch_size = 4
  config.network.g_widths, config.network.d_widths = (8, 4), (4, 8)
  method = methods.get('gan')(config, data.example_shape(config.data))
  state = method.init(jax.random.key(0))
  assert not state.batch_stats['generator']  # No BatchNorm anywhere.
  got = run_method(method, state, steps=1)
  assert_close(got.params, hand_gan(config, method, state, steps=1))


def test_the_old_generator_modes_train_differently():
  """Swapping 'phase' and 'lagged' changes the second iteration, so the
  comparisons above can tell the modes apart."""
  results = {}
  for mode in ('phase', 'lagged'):
    config = small_config('gan', old_generator=mode, reg_weight=50.0)
    method = methods.get('gan')(config, data.example_shape(config.data))
    state = method.init(jax.random.key(0))
    results[mode] = run_method(method, state).params['generator']
  assert differs(results['phase'], results['lagged'])


# ------------------------------------------------------------------- AAE ---


@pytest.mark.parametrize('mode', ['joint', 'separate'])
def test_aae_iteration_matches_the_hand_written_one(mode):
  config = small_config('aae', **{'aae.mode': mode, 'aae.recon_weight': 3.0})
  method = methods.get('aae')(config, data.example_shape(config.data))
  state = method.init(jax.random.key(0))
  e, g, d = (
    method.networks[n][0] for n in ('encoder', 'decoder', 'discriminator')
  )
  tx = adam(config)
  params = dict(state.params)
  opts = {n: tx.init(p) for n, p in params.items()}
  w = config.aae.recon_weight
  for i in range(STEPS):
    x = batches(method, i)[0]
    key = jax.random.key(10 + i)
    prior = jax.random.normal(key, (B, config.latent_dim))
    codes = e.apply({'params': params['encoder']}, x)
    params['discriminator'], opts['discriminator'] = step(
      tx,
      lambda p, c=codes, pr=prior: losses.aae_discriminator_loss(
        d.apply({'params': p}, c), d.apply({'params': p}, pr)
      ),
      params['discriminator'],
      opts['discriminator'],
    )
    D = params['discriminator']

    def ae_loss(p, x=x, D=D):
      codes = e.apply({'params': p['encoder']}, x)
      logits = d.apply({'params': D}, codes)
      if mode == 'joint':  # Eq. (34) for E and G together.
        recon = g.apply({'params': p['decoder']}, codes)
        return losses.aae_loss(logits, x, recon, w)
      # Eq. (33) for E; the reconstruction for G on frozen codes.
      recon = g.apply({'params': p['decoder']}, jax.lax.stop_gradient(codes))
      return losses.aae_encoder_loss(logits) + w * jnp.mean((x - recon) ** 2)

    ae = {n: params[n] for n in ('encoder', 'decoder')}
    ae_opt = {n: opts[n] for n in ae}
    grads = jax.grad(ae_loss)(ae)
    for n in ae:
      updates, opts[n] = tx.update(grads[n], ae_opt[n], ae[n])
      params[n] = optax.apply_updates(ae[n], updates)
  assert_close(run_method(method, state).params, params)


# ------------------------------------------------------------------- ALI ---


@pytest.mark.parametrize('variant', ['vi', 'minmax', 'nonsaturating'])
def test_ali_iteration_matches_the_hand_written_one(variant):
  config = small_config(
    'ali',
    **{
      'ali.variant': variant,
      'ali.encoder_sigma': 0.3,
      'ali.generator_sigma': 0.2,
      'd_steps': 2,
      'g_steps': 2,
    },
  )
  method = methods.get('ali')(config, data.example_shape(config.data))
  state = method.init(jax.random.key(0))
  e, g, d = (
    method.networks[n][0] for n in ('encoder', 'generator', 'discriminator')
  )
  tx = adam(config)
  params = dict(state.params)
  opts = {n: tx.init(p) for n, p in params.items()}
  L = config.latent_dim

  def sides(p, x, z, key):
    e_key, g_key = jax.random.split(key)
    code = e.apply({'params': p['encoder']}, x)
    fake = g.apply({'params': p['generator']}, z)
    z_hat = code + 0.3 * jax.random.normal(e_key, code.shape)
    x_hat = fake + 0.2 * jax.random.normal(g_key, fake.shape)
    return z_hat, x_hat

  for i in range(STEPS):
    real = batches(method, i)
    keys = jax.random.split(jax.random.key(10 + i), config.d_steps + 2)
    for k in range(config.d_steps):
      z_key, noise_key = jax.random.split(keys[k])
      z = jax.random.normal(z_key, (B, L))
      z_hat, x_hat = sides(params, real[k], z, noise_key)
      params['discriminator'], opts['discriminator'] = step(
        tx,
        lambda p, x=real[k], z=z, z_hat=z_hat, x_hat=x_hat: (
          losses.ali_discriminator_loss(
            d.apply({'params': p}, x, z_hat), d.apply({'params': p}, x_hat, z)
          )
        ),
        params['discriminator'],
        opts['discriminator'],
      )
    x, z = real[-1], jax.random.normal(keys[-2], (B, L))
    D = params['discriminator']

    def eg_loss(p, x=x, z=z, D=D, key=keys[-1]):
      z_hat, x_hat = sides(p, x, z, key)
      return losses.ali_generator_encoder_loss(
        d.apply({'params': D}, x, z_hat),
        d.apply({'params': D}, x_hat, z),
        variant,
      )

    for _ in range(config.g_steps):
      eg = {n: params[n] for n in ('encoder', 'generator')}
      grads = jax.grad(eg_loss)(eg)
      for n in eg:
        updates, opts[n] = tx.update(grads[n], opts[n], eg[n])
        params[n] = optax.apply_updates(eg[n], updates)
  assert_close(run_method(method, state).params, params)
