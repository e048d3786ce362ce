"""Fields shared by every model's config, and the preset mechanism.

Every model config has the same top-level names, so one override such as
`--config.num_steps=100` means the same thing everywhere.
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
  config.num_steps = 1000  # Iterations (each may hold several optimizer steps).
  config.batch_size = 64  # Global batch, split over all devices.
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 1000
  config.keep_checkpoints = 3
  config.num_grid_samples = 64  # Fixed latents rendered into the PNG grid.
  # Every N steps (and at the last) compute config.eval's metrics, write
  # eval_<step>.json and log them; 0 = only with --mode=eval.
  config.eval_every_steps = 0
  config.eval = eval_defaults.get_config()
  scale_eval(config, preset)

  config.data = ml_collections.ConfigDict()
  config.data.name = 'celeb_a'  # celeb_a | mnist | ring8 | grid25
  config.data.source = 'tfds'  # mnist only: bundled (offline) | tfds
  config.data.split = 'train'
  config.data.data_dir = ''  # TFDS data_dir; '' = ~/tensorflow_datasets.
  config.data.try_gcs = False  # Read prepared TFDS datasets from GCS.
  config.data.image_size = 64
  config.data.crop_size = 108  # Reference: centre crop 108 at (55, 35).
  config.data.resize = 'bicubic'  # tf.image.resize method.
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
    config.eval_every_steps = 1000
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
  config.num_steps = 4
  config.batch_size = 8
  config.log_every_steps = 2
  config.sample_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_grid_samples = 16


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


def get_encoder_decoder_config(
  model: str, preset: str
) -> ml_collections.ConfigDict:
  """The fields VAE, AAE and ALI share, set for `preset`.

  The run length, data, latent size and encoder/decoder networks of each
  preset; the models add their own fields and their discriminators.
  Without a preset: CelebA 64x64 with the reference DCGAN widths, as long as
  the GAN's experiment 1 (50 epochs at batch 64).
  """
  config = get_base_config(model, preset)
  config.num_steps = 158_250
  config.sample_every_steps = 1000
  config.latent_dim = 100
  config.ema_decay = 0.0  # EMA of the decoder/generator for samples; 0 = off.

  config.network = ml_collections.ConfigDict()
  # Encoders mirror D (stride-2 convs), decoders are the DCGAN G.
  config.network.e_widths = (64, 128, 256, 512)
  config.network.g_widths = (512, 256, 128, 64)
  config.network.kernel_size = 5
  config.network.batch_norm = True
  # Without BatchNorm: biases on the hidden layers (False: none, as the
  # reference's no-BatchNorm networks).
  config.network.hidden_bias = True
  # Phase-decomposed stride-2 layers (vi_gen/layers.py): same function,
  # much faster on XLA:CPU.
  config.network.fast_conv = True

  if preset == 'mnist':
    use_bundled_mnist(config)
    config.num_steps = 5000
    config.sample_every_steps = 500
    config.checkpoint_every_steps = 500
    config.latent_dim = 16
    config.network.e_widths = (64, 128)  # 28x28, 14x14, 7x7.
    config.network.g_widths = (128, 64)  # 7x7 base, 14x14, 28x28.
  elif preset == 'toy':
    use_mixture(config, 'ring8')
    config.num_steps = 5000
    config.batch_size = 256
    config.sample_every_steps = 500
    config.latent_dim = 2
    config.num_grid_samples = 2048
    config.network.e_widths = (128, 128, 128)
    config.network.g_widths = (128, 128, 128)
    config.optim.lr = 1e-3
  elif preset == 'test':
    shrink_for_test(config)
    config.latent_dim = 2  # So that the latents/ picture is drawn too.
    config.network.e_widths = (8, 16)
    config.network.g_widths = (16, 8)
  return config
