"""The `eval` block of every model config, with the literature's defaults.

Only ml_collections is imported here: config files load it before the
command line hides the GPUs from TensorFlow.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The `eval` block of a model config, with the literature's defaults."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Latents, subsets and held-out draws.
  config.metrics = ()  # Groups to compute (see GROUPS); () = all that apply.
  config.batch_size = 500  # Examples per network call.
  # Generated samples for FID/KID/IS (10k: the compare_gan / clean-fid CIFAR
  # convention; FID is biased in N, so FID10k and FID50k differ).
  config.num_samples = 10_000
  config.num_reference = 10_000  # Real examples for reference statistics.
  # TFDS split of the real examples (the bundled MNIST has one set).
  config.split = 'test'
  config.reference_dir = ''  # Cache of reference statistics; '' = workdir.
  config.inception_weights = ''  # .npz from convert_inception; '' = skip.
  config.mnist_classifier = ''  # '' = the shipped weights.
  config.kid_subsets = 100  # KID: 100 subsets of 1000 (kid50k convention).
  config.kid_subset_size = 1000
  config.is_splits = 10
  config.num_mode_samples = 2500  # 2-D mode metrics (VEEGAN: 2500).
  config.num_heldout = 1000  # Real examples for IWAE / reconstruction / EM.
  # K of the IWAE bound (Burda et al.: 5000). 1000 x 5000 decoder passes:
  # seconds on a GPU, about an hour on 2 CPU cores (MNIST decoder).
  config.iwae_samples = 5000
  config.iwae_chunk = 500  # Samples per chunk: bounds the memory.
  config.mmd_bandwidth = 0.0  # Codes-vs-prior RBF sigma; 0 = median heuristic.
  return config
