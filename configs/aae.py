r"""AAE, eqs. (30), (33), (34): deterministic encoder, decoder, latent D(z).

  python -m vi_gen.main --config=configs/aae.py:mnist

Presets (after the colon): none or `celeba` = CelebA 64x64 (needs TFDS
celeb_a prepared); `mnist` = the bundled MNIST; `toy` = 2-D mixtures
(`--config.data.name=ring8|grid25`) with a 2-D latent; `test` = tiny,
seconds on a CPU. `--config.aae.mode=separate` trains the encoder on
eq. (33) alone and the decoder apart on the reconstruction.

Writes samples/, reconstructions/ (each original left of its
reconstruction) and, for a 2-D latent, latents/ (codes E(x) in red over
prior samples in grey).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of the preset after the colon (see the module docstring)."""
  preset = common.parse_preset(arg)
  config = common.get_encoder_decoder_config('aae', preset)

  config.aae = ml_collections.ConfigDict()
  # 'joint': E and G on eq. (34); 'separate': E on eq. (33), G apart on the
  # reconstruction of the (fixed) codes.
  config.aae.mode = 'joint'
  # lambda of eq. (34), on the per-element mean of (x - G(E(x)))^2 (the
  # paper gives no value).
  config.aae.recon_weight = 10.0

  config.network.d_widths = (512, 512)  # The latent D(z): an MLP.
  if preset == 'mnist':
    config.network.d_widths = (256, 256)
  elif preset == 'toy':
    config.network.d_widths = (128, 128, 128)
  elif preset == 'test':
    config.network.d_widths = (16, 16)
  return config
