"""EM for Gaussian mixtures in the generic loop: eqs. (8) and (11).

EM is the special case of the paper's framework in which both coordinate
steps are exact: the E-step, eq. (11), sets p(z|x) to the posterior q(z|x),
and the M-step, eq. (8), maximises E_x sum_z p(z|x) log q(x, z) in closed
form (`vi_gen.gmm`). Nothing is gradient-based, so one loop iteration is one
EM step on the iteration's batch, and the train state holds no optimizer:

* `params['mixture']`: weights, means and covariances of
  q(x, z) = w_z N(x; mu_z, Sigma_z), images flattened to vectors;
* `extras['curve']`: the log-likelihood curve, EM's only state besides
  the parameters. It is in the checkpoint, so a resumed run continues it.

Exact EM needs the same data in every step (eq. 8 averages over p~(x)): the
mnist preset takes the whole bundled set as its batch, which the in-memory
pipeline then yields identically every time. The 2-D mixtures draw fresh
points for each batch, so there each step is EM on a new large sample, a
stochastic EM whose likelihood fluctuates by O(1/sqrt(batch_size)) around the
fixed point instead of rising monotonically.

`init(key)` sees no data, so it returns placeholder parameters; the first
iteration (step 0) replaces them by a start computed from its batch
(`EM.initial_mixture`: k-means++ seeds, then one M-step) and takes its EM
step from there.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cholesky

from vi_gen import compiler, data, errors, gmm, images
from vi_gen.state import TrainState

COVARIANCE_TYPES = ('diag', 'full')

# Points kept of the log-likelihood curve. A fixed shape keeps the checkpoint
# restorable when a resumed run raises num_steps; longer runs are thinned
# (see `record`). Even, so that halving is exact.
CURVE_POINTS = 1024


def num_components(config) -> int:
  """K; `num_components=0` means one per mode of the 2-D mixture (8 or 25)."""
  if config.num_components == 0 and config.data.name in data.MIXTURES:
    return len(data.mixture_centers(config.data.name)[0])
  return config.num_components


def check_config(config) -> None:
  """EM-specific config rules; raises errors.ConfigError."""
  errors.require(
    config.covariance_type in COVARIANCE_TYPES,
    f'covariance_type must be one of {COVARIANCE_TYPES}, got'
    f' {config.covariance_type!r}.',
  )
  errors.require(
    config.num_components >= 1
    or (config.num_components == 0 and config.data.name in data.MIXTURES),
    f'num_components must be >= 1, got {config.num_components} (0, one'
    f' component per mode, exists only for the 2-D mixtures'
    f' {", ".join(data.MIXTURES)}; data.name is {config.data.name!r}).',
  )
  k = num_components(config)
  errors.require(
    k <= config.batch_size,
    f'num_components={k} exceeds batch_size={config.batch_size}: k-means++'
    ' seeds every mean on a distinct point of the first batch.',
  )
  errors.require(config.ridge >= 0, f'ridge must be >= 0, got {config.ridge}.')
  errors.require(
    config.ridge > 0 or config.data.name in data.MIXTURES,
    'ridge must be > 0 for images: a pixel that is constant over a'
    " component's images (MNIST's borders) gets zero variance and an"
    ' infinite likelihood.',
  )


def record(
  curve: dict[str, jax.Array], step: jax.Array, value: jax.Array
) -> dict[str, jax.Array]:
  """Adds the value of `step` to a fixed-size curve, thinning it when full.

  Keeps the steps that are multiples of `stride`, the smallest power of two
  with step < capacity * stride: when the buffer is full every other point
  is dropped and the stride doubles. Any run length fits one shape, and the
  result depends on the step only, so a resumed run builds the same curve.

  Args:
    curve: {'steps': int32 [C], 'log_likelihood': [C]}; unused slots hold
      -1 and NaN.
    step: the index of this point (int32 scalar).
    value: its value.

  Returns:
    The updated curve.
  """
  steps, values = curve['steps'], curve['log_likelihood']
  capacity = steps.shape[0]
  stride = jnp.left_shift(1, 32 - jax.lax.clz(step // capacity))
  thin = (step >= capacity) & (step == capacity * (stride // 2))

  def halve(a: jax.Array, fill: float) -> jax.Array:
    kept = a[::2]
    rest = jnp.full((capacity - kept.shape[0],), fill, a.dtype)
    return jnp.where(thin, jnp.concatenate([kept, rest]), a)

  steps, values = halve(steps, -1), halve(values, jnp.nan)
  keep = step % stride == 0
  index = step // stride
  return {
    'steps': jnp.where(keep, steps.at[index].set(step), steps),
    'log_likelihood': jnp.where(keep, values.at[index].set(value), values),
  }


class EM:
  """EM for a Gaussian mixture: placeholder init, one EM step per iteration."""

  check_config = staticmethod(check_config)
  eval_groups = ('heldout_likelihood',)
  # What XLA:CPU gives the YNNPACK library in the training iteration.
  cpu_library_fusions = compiler.MIXTURE

  def __init__(self, config, example_shape: tuple[int, ...]):
    check_config(config)
    self.config = config
    self.example_shape = tuple(example_shape)
    self.dim = math.prod(self.example_shape)
    self.num_components = num_components(config)
    self.batches_per_iteration = 1
    self._generate = jax.jit(self.generate)

  def mixture(self, state: TrainState) -> gmm.GMMParams:
    """The mixture's parameters (stored as a dict, the checkpoint's form)."""
    return gmm.GMMParams(**state.params['mixture'])

  def log_likelihood(self, state: TrainState, x: jax.Array) -> jax.Array:
    """log q(x) per example of x [N, ...] (images flattened), in nats."""
    return gmm.log_likelihood(self.mixture(state), x.reshape(len(x), -1))

  def initial_mixture(self, key: jax.Array, x: jax.Array) -> gmm.GMMParams:
    """k-means++ seeds, then the M-step (eq. 8) of the hard assignment of
    each point to its nearest seed, as scikit-learn starts.

    The seeds are the means of `gmm.init_from_data`, but not its
    covariances: that of the whole data set makes the first E-step so soft
    that the means collapse towards the centre and EM ends in a poor local
    optimum (on grid25 a dead component and two modes per Gaussian
    elsewhere). The M-step's ridge also keeps pixels that are constant over
    the data (MNIST's borders) from zero variance.
    """
    seeds = gmm.init_from_data(key, x, self.num_components, 'diag').means
    distances = (
      jnp.sum(x * x, axis=1, keepdims=True)
      - 2.0 * x @ seeds.T
      + jnp.sum(seeds * seeds, axis=1)
    )
    nearest = jax.nn.one_hot(
      jnp.argmin(distances, axis=1), self.num_components, dtype=x.dtype
    )
    return gmm.m_step(
      x, nearest, self.config.covariance_type, self.config.ridge
    )

  def init(self, key: jax.Array) -> TrainState:
    """Placeholder parameters of the right shapes; step 0 seeds from data."""
    del key  # The seeding at step 0 uses that iteration's key.
    k, d = self.num_components, self.dim
    if self.config.covariance_type == 'full':
      covariances = jnp.broadcast_to(jnp.eye(d), (k, d, d))
    else:
      covariances = jnp.ones((k, d))
    params = gmm.GMMParams(
      weights=jnp.full((k,), 1.0 / k),
      means=jnp.zeros((k, d)),
      covariances=covariances,
    )
    curve = {
      'steps': jnp.full((CURVE_POINTS,), -1, jnp.int32),
      'log_likelihood': jnp.full((CURVE_POINTS,), jnp.nan),
    }
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params={'mixture': params._asdict()},
      batch_stats={},
      opt_states={},
      extras={'curve': curve},
    )

  def iteration(
    self, state: TrainState, batch: jax.Array, key: jax.Array
  ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One EM step on all of `batch`: eq. (11), then eq. (8).

    Args:
      state: the train state.
      batch: data, [1, batch_size, *example_shape].
      key: this iteration's key; used only at step 0, for k-means++.

    Returns:
      The new state and its metrics: `log_likelihood`, the mean log q(x) of
      the parameters this step started from (the normaliser of eq. 11, so
      it costs nothing; at step 0 that of `initial_mixture`), and
      `min_weight`, which shows a component dying.
    """
    x = batch.reshape(-1, self.dim)
    params = jax.lax.cond(
      state.step == 0,
      lambda: self.initial_mixture(key, x),
      lambda: self.mixture(state),
    )
    # Both share one log q(x, z) computation after XLA's CSE.
    log_likelihood = jnp.mean(gmm.log_likelihood(params, x))
    responsibilities = gmm.e_step(params, x)
    new_params = gmm.m_step(
      x, responsibilities, self.config.covariance_type, self.config.ridge
    )
    new_state = state.replace(
      step=state.step + 1,
      params={'mixture': new_params._asdict()},
      extras={
        'curve': record(state.extras['curve'], state.step, log_likelihood)
      },
    )
    metrics = {
      'log_likelihood': log_likelihood,
      'min_weight': jnp.min(new_params.weights),
    }
    return new_state, metrics

  def latents(self, key: jax.Array, num: int) -> jax.Array:
    """z = (u, eps), [num, 1 + D]: u ~ U[0, 1) picks the component, eps ~
    N(0, I) the point, so `generate` is deterministic given z."""
    u_key, eps_key = jax.random.split(key)
    u = jax.random.uniform(u_key, (num, 1))
    eps = jax.random.normal(eps_key, (num, self.dim))
    return jnp.concatenate([u, eps], axis=-1)

  def generate(self, state: TrainState, z: jax.Array) -> jax.Array:
    """Samples of q(x): component by inverse CDF of the weights, then
    mu_z + Sigma_z^(1/2) eps. Images are clipped to the pixel range [-1, 1]."""
    params = self.mixture(state)
    u, eps = z[:, 0], z[:, 1:]
    component = jnp.searchsorted(jnp.cumsum(params.weights), u, side='right')
    component = jnp.minimum(component, self.num_components - 1)
    if self.config.covariance_type == 'full':
      scale = cholesky(params.covariances, lower=True)[component]
      noise = jnp.einsum('nde,ne->nd', scale, eps)
    else:
      noise = jnp.sqrt(params.covariances[component]) * eps
    samples = (params.means[component] + noise).reshape(
      z.shape[0], *self.example_shape
    )
    if len(self.example_shape) > 1:
      samples = jnp.clip(samples, -1.0, 1.0)
    return samples

  def pictures(
    self, state: TrainState, key: jax.Array, reference: np.ndarray
  ) -> dict[str, np.ndarray]:
    """The log-likelihood curve; the fitted 2-sigma ellipses over the data
    (2-D) or the means as images; samples of q(x) from fixed latents."""
    curve = jax.device_get(state.extras['curve'])
    recorded = curve['steps'] >= 0
    pictures = {
      'log_likelihood_curve': images.line_plot(
        curve['steps'][recorded],
        curve['log_likelihood'][recorded],
        title='mean log q(x) vs. EM steps done',
      )
    }
    params = jax.device_get(self.mixture(state))
    if self.example_shape == (2,):
      covariances = params.covariances
      if self.config.covariance_type == 'diag':
        covariances = covariances[:, :, None] * np.eye(2)
      extent = 1.25 * float(np.max(np.abs(reference)))
      pictures['ellipses'] = images.ellipse_plot(
        params.means, covariances, reference, extent
      )
    else:
      pictures['means'] = images.image_grid(
        params.means.reshape(-1, *self.example_shape)
      )
    z = self.latents(key, self.config.run.num_grid_samples)
    samples = np.asarray(jax.device_get(self._generate(state, z)))
    pictures['samples'] = images.picture(samples, reference)
    return pictures
