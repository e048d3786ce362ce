r"""VAE, eq. (7): Gaussian encoder, Gaussian or Bernoulli decoder.

  python -m vi_gen.main --config=configs/vae.py:mnist

Presets (after the colon): none or `celeba` = CelebA 64x64 (needs TFDS
celeb_a prepared), Gaussian decoder with a learned variance; `mnist` = the
bundled MNIST, Bernoulli decoder; `toy` = 2-D mixtures
(`--config.data.name=ring8|grid25`), 2-D latent, Gaussian decoder with a
learned variance; `test` = tiny, seconds on a CPU.

Writes samples/ and reconstructions/ (each original left of its
reconstruction), and latents/ (encoder means over prior samples) for a 2-D
latent.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of the preset after the colon (see the module docstring)."""
  preset = common.parse_preset(arg)
  config = common.get_encoder_decoder_config('vae', preset)
  # One loss for both networks: plain Adam, not the GAN's b1 = 0.5.
  config.optim.lr = 1e-3
  config.optim.b1 = 0.9

  config.vae = ml_collections.ConfigDict()
  # q(x|z): 'gaussian', N(G(z), exp(recon_logvar)), or 'bernoulli' on
  # x mapped from [-1, 1] to [0, 1] (images only).
  config.vae.likelihood = 'gaussian'
  # Gaussian: learn recon_logvar (one scalar, starting from the value
  # below) instead of keeping it fixed.
  config.vae.learn_variance = True
  config.vae.recon_logvar = 0.0

  if preset == 'mnist':
    config.vae.likelihood = 'bernoulli'
    config.vae.learn_variance = False
  elif preset == 'test':
    config.vae.learn_variance = False
  return config
