"""Fields shared by every model's config, and the preset mechanism.

Every model config has the same top-level names, so one override such as
`--config.run.num_steps=100` means the same thing everywhere.
"""

import ml_collections

from vi_gen.evaluation import defaults as eval_defaults

PRESETS = ('mnist', 'celeba', 'toy', 'test')


def get_base_config(
  model: str, preset: str, gradient_trained: bool = True
) -> ml_collections.ConfigDict:
  """The run-control, data, evaluation and (for the gradient-trained
  models) optimizer fields; models add their own."""
  config = ml_collections.ConfigDict()
  config.model = model  # Registered method name, see vi_gen/methods.
  config.preset = preset  # Which preset built this config (names the workdir).
  config.seed = 0  # Initialisation, data order and every PRNG key.
  config.batch_size = 64  # Global batch, split over all devices.

  # How long the run is, what it logs and saves, where the data lives (and,
  # for the latent models, how layers are lowered): never what it computes. Everything under `run`,
  # `eval` and `debug` may change when a run is resumed; every other field
  # defines the experiment and must match the checkpoint.
  config.run = ml_collections.ConfigDict()
  config.run.num_steps = 1000  # Iterations (each may hold several steps).
  config.run.log_every_steps = 100
  config.run.checkpoint_every_steps = 1000
  config.run.keep_checkpoints = 3
  config.run.sample_every_steps = 1000
  config.run.num_grid_samples = 64  # Fixed latents rendered into the PNG grid.
  # Every N steps (and at the last) compute config.eval's metrics, write
  # eval_<step>.json and log them; 0 = only with --mode=eval.
  config.run.eval_every_steps = 0
  config.run.data_dir = ''  # TFDS data_dir; '' = ~/tensorflow_datasets.
  config.run.try_gcs = False  # Read prepared TFDS datasets from GCS.
  config.eval = eval_defaults.get_config()
  scale_eval(config, preset)

  config.data = ml_collections.ConfigDict()
  config.data.name = 'celeb_a'  # celeb_a | mnist | ring8 | grid25
  config.data.source = 'tfds'  # mnist only: bundled (offline) | tfds
  config.data.split = 'train'
  config.data.image_size = 64
  config.data.crop_size = 108  # Reference: centre crop 108 at (55, 35).
  # The reference's TF1 resize_images op; or a tf.image.resize method
  # (vi_gen/data.py RESIZE_METHODS).
  config.data.resize = 'bicubic_tf1'
  config.data.shuffle_buffer = 10_000

  if gradient_trained:
    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 2e-4  # Reference: Adam(2e-4, b1=0.5) for every player.
    config.optim.b1 = 0.5
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8

  # Testing aids, off by default; never needed in a real run.
  config.debug = ml_collections.ConfigDict()
  # N > 0: every real example of iteration N (the one that ends at step N)
  # is NaN, to test that the divergence guard stops the run
  # (tests/reliability_test.py). 0 = off.
  config.debug.nan_at_step = 0
  return config


def scale_eval(config: ml_collections.ConfigDict, preset: str) -> None:
  """Evaluation sized for a 2-core CPU: the MNIST and toy presets evaluate
  every 1000 steps in seconds, the test preset only on request; the CelebA
  experiment keeps the literature's counts and evaluates on request."""
  if preset in ('mnist', 'mnist_exp2', 'toy'):
    config.run.eval_every_steps = 1000
    # IWAE at K = 5000 on 1000 digits takes about an hour on 2 CPU cores.
    config.eval.iwae_samples = 100
    config.eval.num_heldout = 250
  elif preset == 'test':
    config.eval.update(
      num_samples=200,
      num_reference=200,
      batch_size=100,
      kid_subsets=10,
      kid_subset_size=100,
      num_mode_samples=500,
      num_heldout=16,
      iwae_samples=8,
      iwae_chunk=8,
    )


def shrink_for_test(config: ml_collections.ConfigDict) -> None:
  """The run control of every model's `test` preset: 4 iterations on the
  bundled MNIST, a checkpoint, a log line and the pictures every 2, so that
  a test sees a save, a resume and the end in seconds. Models shrink their
  networks themselves."""
  use_bundled_mnist(config)
  config.run.num_steps = 4
  config.batch_size = 8
  config.run.log_every_steps = 2
  config.run.sample_every_steps = 2
  config.run.checkpoint_every_steps = 2
  config.run.num_grid_samples = 16


def parse_preset(arg: str | None, extra: tuple[str, ...] = ()) -> str:
  """'' (the paper's CelebA experiment) or one of PRESETS (+ a model's
  `extra` presets)."""
  preset = arg or ''
  known = PRESETS + extra
  if preset and preset not in known:
    raise ValueError(f'Unknown preset {preset!r}; known: {", ".join(known)}.')
  return preset


def use_bundled_mnist(config: ml_collections.ConfigDict) -> None:
  """Train on the bundled MNIST (offline), 28x28."""
  config.data.name = 'mnist'
  config.data.source = 'bundled'
  config.data.image_size = 28


def use_mixture(config: ml_collections.ConfigDict, name: str = 'ring8') -> None:
  """Train on a 2-D mixture: ring8 or grid25."""
  config.data.name = name


def scale_of(preset: str) -> str:
  """The data and network size of a preset: 'celeba' (also the default and
  celeba_exp2), 'mnist' (also mnist_exp2), 'toy' or 'test'."""
  if preset in ('mnist', 'toy', 'test'):
    return preset
  return 'mnist' if preset == 'mnist_exp2' else 'celeba'


# The widths of the networks that read an image (the GAN's and ALI's
# discriminator trunk, the encoders: stride-2 convs) and of the generator
# (a dense base, then stride-2 transposed convs), per scale; CelebA's are
# the reference DCGAN's. On the 2-D mixtures both are MLPs.
READER_WIDTHS = {
  'celeba': (64, 128, 256, 512),
  'mnist': (64, 128),  # 28x28, 14x14, 7x7.
  'toy': (128, 128, 128),
  'test': (8, 16),
}
GENERATOR_WIDTHS = {
  'celeba': (512, 256, 128, 64),
  'mnist': (128, 64),  # 7x7 base, 14x14, 28x28.
  'toy': (128, 128, 128),
  'test': (16, 8),
}


def get_latent_model_config(
  model: str, preset: str
) -> ml_collections.ConfigDict:
  """The fields every model with a latent z and a generator G(z) shares,
  set for `preset`: the run length, data, latent size and G.

  Without a preset: CelebA 64x64 with the reference DCGAN, as long as the
  GAN's experiment 1 (158,250 iterations = 50 epochs at batch 64). The
  models add their other networks (`READER_WIDTHS`) and their own fields.
  """
  config = get_base_config(model, preset)
  config.run.num_steps = 158_250
  config.latent_dim = 100
  config.ema_decay = 0.0  # EMA of the generator for samples; 0 = off.
  # Stride-2 convolutions: 'phase' (vi_gen/layers.py, the same function as
  # flax's layers, much faster on XLA:CPU), 'native' (flax's nn.Conv and
  # nn.ConvTranspose) or 'auto' (the faster one where the run happens).
  config.run.conv_lowering = 'auto'

  scale = scale_of(preset)
  config.network = ml_collections.ConfigDict()
  config.network.g_widths = GENERATOR_WIDTHS[scale]
  config.network.kernel_size = 5
  config.network.batch_norm = True
  # Without BatchNorm: biases on the hidden layers (False: none, as the
  # reference's no-BatchNorm networks).
  config.network.hidden_bias = True
  # What the networks compute in: 'float32', or 'bfloat16' (activations,
  # matmuls and convolutions; parameters, optimizer state, BatchNorm
  # statistics and the losses stay float32).
  config.network.compute_dtype = 'float32'

  if scale == 'mnist':
    use_bundled_mnist(config)
    config.run.num_steps = 5000
    config.run.sample_every_steps = 500
    config.run.checkpoint_every_steps = 500
  elif scale == 'toy':
    use_mixture(config, 'ring8')
    config.run.num_steps = 5000
    config.batch_size = 256
    config.run.sample_every_steps = 500
    config.run.num_grid_samples = 2048
    config.latent_dim = 2
    config.optim.lr = 1e-3
  elif scale == 'test':
    shrink_for_test(config)
  return config


def get_encoder_decoder_config(
  model: str, preset: str
) -> ml_collections.ConfigDict:
  """The fields VAE, AAE and ALI share, set for `preset`: the latent model's
  (`get_latent_model_config`) and an encoder E(x) with `network.e_widths`.

  The models add their own fields and their discriminators.
  """
  config = get_latent_model_config(model, preset)
  config.network.e_widths = READER_WIDTHS[scale_of(preset)]
  if preset == 'mnist':
    config.latent_dim = 16
  elif preset == 'test':
    config.latent_dim = 2  # So that the latents/ picture is drawn too.
  return config
