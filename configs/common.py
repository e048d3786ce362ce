"""Fields shared by every model's config, and the preset mechanism.

Every model config has the same top-level names, so one override such as
`--config.num_steps=100` means the same thing everywhere.
"""

import ml_collections

PRESETS = ('mnist', 'celeba', 'toy', 'test')


def get_base_config() -> ml_collections.ConfigDict:
  """The run-control fields and the data block; models add their own."""
  config = ml_collections.ConfigDict()
  config.model = ''  # Registered method name, see vi_gen/methods.
  config.preset = ''  # Which preset built this config (names the workdir).
  config.seed = 0  # Initialisation, data order and every PRNG key.
  config.num_steps = 1000  # Iterations (each may hold several optimizer steps).
  config.batch_size = 64  # Global batch, split over all devices.
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 1000
  config.keep_checkpoints = 3
  config.num_grid_samples = 64  # Fixed latents rendered into the PNG grid.

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

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 2e-4  # Reference: Adam(2e-4, b1=0.5) for every player.
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  return config


def parse_preset(arg: str | None) -> str:
  """'' (the paper's CelebA experiment) or one of PRESETS."""
  preset = arg or ''
  if preset and preset not in PRESETS:
    raise ValueError(f'Unknown preset {preset!r}; known: {", ".join(PRESETS)}.')
  return preset


def use_bundled_mnist(config: ml_collections.ConfigDict) -> None:
  config.data.name = 'mnist'
  config.data.source = 'bundled'
  config.data.image_size = 28


def use_mixture(config: ml_collections.ConfigDict, name: str = 'ring8') -> None:
  config.data.name = name
