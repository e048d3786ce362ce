r"""ALI/BiGAN, eqs. (38), (41)-(43): encoder, generator, joint D(x, z).

  python -m vi_gen.main --config=configs/ali.py:mnist

Presets (after the colon): none or `celeba` = CelebA 64x64 (needs TFDS
celeb_a prepared); `mnist` = the bundled MNIST; `toy` = 2-D mixtures
(`--config.data.name=ring8|grid25`) with a 2-D latent; `test` = tiny,
seconds on a CPU. `--config.ali.variant=minmax|nonsaturating` gives the
standard eqs. (42)/(43) instead of the paper's (41);
`--config.ali.complete=True --config.ali.encoder_sigma=0.1
--config.ali.generator_sigma=0.1 --config.g_steps=2` keeps the two terms of
eq. (40) that (41) drops.

Writes samples/, reconstructions/ G(E(x)) (each original left of its
reconstruction) and, for a 2-D latent, latents/ (codes E(x) in red over
prior samples in grey).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of the preset after the colon (see the module docstring)."""
  preset = common.parse_preset(arg)
  config = common.get_encoder_decoder_config('ali', preset)
  config.d_steps = 1  # D steps per iteration, each on its own real batch.
  config.g_steps = 1  # E/G steps per iteration, on one real batch and z.
  # The old E^o, G^o of ali.complete: 'phase' = at the start of the E/G
  # phase (needs g_steps >= 2), 'lagged' = one iteration behind.
  config.old_generator = 'phase'

  config.ali = ml_collections.ConfigDict()
  config.ali.variant = 'vi'  # vi (eq. 41) | minmax (42) | nonsaturating (43)
  # Add eq. (40)'s generator KL and latent-cycle terms (DERIVED forms; needs
  # both sigmas > 0 and variant 'vi').
  config.ali.complete = False
  # p(z|x) = N(E(x), encoder_sigma^2 I) and q(x|z) = N(G(z),
  # generator_sigma^2 I); 0 = deterministic (Dirac).
  config.ali.encoder_sigma = 0.0
  config.ali.generator_sigma = 0.0

  # D(x, z): conv trunk on x (as the GAN's D) + MLP on z, then a joint MLP;
  # on 2-D data an MLP on the concatenation (d_widths only).
  config.network.d_widths = (64, 128, 256, 512)
  config.network.d_z_widths = (512,)
  config.network.d_joint_widths = (1024,)
  if preset == 'mnist':
    config.network.d_widths = (64, 128)
    config.network.d_z_widths = (256,)
    config.network.d_joint_widths = (512,)
  elif preset == 'toy':
    config.network.d_widths = (128, 128, 128)
  elif preset == 'test':
    config.network.d_widths = (8, 16)
    config.network.d_z_widths = (16,)
    config.network.d_joint_widths = (16,)
  return config
