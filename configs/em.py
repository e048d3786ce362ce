r"""EM for Gaussian mixtures, the special case of eqs. (8)-(11).

  python -m vi_gen.main --config=configs/em.py:mnist

Presets (after the colon): none or `mnist` = 10 diagonal Gaussians on the
bundled MNIST (flattened pixels), the whole 10k set as one batch so every
step is an exact EM step; `toy` = the 2-D mixtures
(`--config.data.name=ring8|grid25`), full covariances, one component per
mode, a fresh 10k-point sample per step (stochastic EM); `test` = tiny,
seconds on a CPU.

There is no `celeba` preset: the exact M-step of eq. (8) averages over the
whole data set, and CelebA (162k images of 64x64x3) does not fit in one
batch, so the loop could only refit the mixture to each minibatch from
scratch; and K diagonal Gaussians on faces give K blurred average faces,
nothing of the paper's CelebA experiment (which is about the GAN).

The run writes log_likelihood_curve/, samples/, and means/ (images) or
ellipses/ (2-D, 2-sigma) as PNGs. EM has no optimizer and no EMA, so its
config has no `optim` and no `ema_decay`.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of the preset after the colon (see the module docstring)."""
  preset = common.parse_preset(arg) or 'mnist'
  if preset == 'celeba':
    raise ValueError(
      'EM has no celeba preset (see the docstring of configs/em.py); use'
      ' mnist or toy.'
    )
  config = common.get_base_config('em', preset, gradient_trained=False)

  config.num_components = 10  # K; 0 = one per mode of a 2-D mixture.
  config.covariance_type = 'diag'  # diag | full
  # Added to every variance in each M-step (eq. 8) and to the k-means++
  # start: a floor for pixels that are (nearly) constant within a component.
  config.ridge = 1e-2

  # One EM step per iteration, so steps are few and each one is worth
  # seeing; everything fits in small checkpoints.
  config.run.num_steps = 100
  config.run.log_every_steps = 1
  config.run.sample_every_steps = 10
  config.run.checkpoint_every_steps = 50

  if preset == 'mnist':
    common.use_bundled_mnist(config)
    config.batch_size = 10_000  # All of it: exact EM (divides 1-8 devices).
  elif preset == 'toy':
    common.use_mixture(config, 'ring8')
    config.batch_size = 10_000
    config.num_components = 0
    config.covariance_type = 'full'
    config.ridge = 1e-6  # The modes' variances are 4e-4 (ring8), 2.5e-3.
    config.run.num_grid_samples = 2048
  elif preset == 'test':
    common.shrink_for_test(config)
    config.batch_size = 10_000  # All of it: exact EM.
    config.num_components = 4
  return config
