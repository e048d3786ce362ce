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
  config = common.get_base_config('gan', preset)

  # The reference's experiment 1 (paper.md §4.7): 158,250 iterations = 50
  # epochs of CelebA at batch 64, samples every 100, checkpoints every 1000.
  config.num_steps = 158_250
  config.sample_every_steps = 100
  config.latent_dim = 100
  config.reg_weight = 5.0  # lambda on the per-element mean of (G - G^o)^2.
  config.d_steps = 1
  config.g_steps = 2  # On the same z: the regularizer acts from step 2 on.
  config.old_generator = 'phase'  # phase | lagged
  # Fresh z batches per G phase, each seen by g_steps G steps, all towards
  # the same G^o snapshot (the reference's Experiment 2 uses 5).
  config.g_batches = 1
  # nonsaturating: -log D(G(z)), eq. (20); saturating: log(1 - D(G(z))).
  config.generator_loss = 'nonsaturating'
  config.ema_decay = 0.0  # EMA of the generator for sampling; 0 = off.

  config.network = ml_collections.ConfigDict()
  config.network.g_widths = (512, 256, 128, 64)
  config.network.d_widths = (64, 128, 256, 512)
  config.network.kernel_size = 5
  config.network.batch_norm = True
  # Without BatchNorm: biases on the hidden layers (False: none, as the
  # reference's no-BatchNorm networks).
  config.network.hidden_bias = True
  # Phase-decomposed stride-2 layers (vi_gen/layers.py): same function,
  # much faster on XLA:CPU.
  config.network.fast_conv = True

  if preset in EXPERIMENT_2:
    config.d_steps = 5
    config.g_batches = 5
    config.network.batch_norm = False
    config.network.hidden_bias = False
    config.sample_every_steps = 20  # The reference's Experiment 2.
  if preset in ('mnist', 'mnist_exp2'):
    common.use_bundled_mnist(config)
    config.num_steps = 3000
    config.log_every_steps = 100
    config.sample_every_steps = 500
    config.checkpoint_every_steps = 500
    config.network.g_widths = (128, 64)  # 7x7 base, 14x14, 28x28.
    config.network.d_widths = (64, 128)
  elif preset == 'toy':
    common.use_mixture(config, 'ring8')
    config.num_steps = 5000
    config.batch_size = 256
    config.latent_dim = 2
    config.log_every_steps = 100
    config.sample_every_steps = 500
    config.checkpoint_every_steps = 1000
    config.network.g_widths = (128, 128, 128)
    config.network.d_widths = (128, 128, 128)
    config.num_grid_samples = 2048
    config.optim.lr = 1e-3
  elif preset == 'test':
    common.shrink_for_test(config)
    config.latent_dim = 8
    config.network.g_widths = (16, 8)
    config.network.d_widths = (8, 16)
  # 'celeba' and the default are the paper's Experiment 1 as set above.
  return config
