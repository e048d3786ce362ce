r"""GAN with the paper's old-generator regularizer (VGAN), eqs. (16), (20), (26).

  python -m vi_gen.main --config=configs/gan.py:mnist

Presets (after the colon): none = the paper's CelebA experiment 1 (needs TFDS
celeb_a prepared); `mnist` = the bundled MNIST, 28x28; `toy` = 2-D mixtures
(`--config.data.name=ring8|grid25`); `test` = tiny, seconds on a CPU.
`--config.reg_weight=0` gives the standard GAN of eq. (20).

`celeba_exp2` is the paper's Experiment 2 (paper.md §4.6): no BatchNorm and
no hidden biases, 5 D steps, then 5 fresh z batches x 2 G steps against one
G^o snapshot; `mnist_exp2` the same schedule and networks at MNIST size.
"""

import ml_collections

from configs import common

EXPERIMENT_2 = ('celeba_exp2', 'mnist_exp2')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of the preset after the colon (see the module docstring)."""
  preset = common.parse_preset(arg, extra=EXPERIMENT_2)
  config = common.get_latent_model_config('gan', preset)
  scale = common.scale_of(preset)
  config.network.d_widths = common.READER_WIDTHS[scale]

  config.reg_weight = 5.0  # lambda on the per-element mean of (G - G^o)^2.
  config.d_steps = 1
  config.g_steps = 2  # On the same z: the regularizer acts from step 2 on.
  config.old_generator = 'phase'  # phase | lagged
  # Fresh z batches per G phase, each seen by g_steps G steps, all towards
  # the same G^o snapshot (the reference's Experiment 2 uses 5).
  config.g_batches = 1
  # nonsaturating: -log D(G(z)), eq. (20); saturating: log(1 - D(G(z))).
  config.generator_loss = 'nonsaturating'

  if scale == 'celeba':
    # The reference's experiment 1 (paper.md §4.7): samples every 100
    # iterations (its Experiment 2: every 20).
    config.run.sample_every_steps = 100
  if preset in EXPERIMENT_2:
    config.d_steps = 5
    config.g_batches = 5
    config.network.batch_norm = False
    config.network.hidden_bias = False
    if scale == 'celeba':
      config.run.sample_every_steps = 20
  if scale == 'mnist':
    config.run.num_steps = 3000
  elif preset == 'test':
    config.latent_dim = 8
  return config
