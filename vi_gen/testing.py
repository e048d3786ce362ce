"""Test fixtures that tests and benchmarks share: data that cannot be
downloaded here, built in its real format so that the real pipelines read
it, and the scikit-learn reference of EM. Nothing on the training path
imports this module.
"""

import io

import numpy as np

from vi_gen import gmm


def store_celeba(data_dir: str, splits: dict[str, list]) -> None:
  """Writes a prepared TFDS celeb_a 2.1.0 of the given images to `data_dir`.

  The real CelebA cannot be downloaded offline; this builds data of its
  format (labels all zero), which the real pipeline then reads, for tests
  and benchmarks.

  Args:
    data_dir: the TFDS data_dir.
    splits: split name -> images, each a 218x178x3 uint8 array or an
      encoded JPEG (bytes); image i gets identity i.
  """
  import tensorflow_datasets as tfds

  features = tfds.builder('celeb_a', data_dir=data_dir).info.features
  landmarks = dict.fromkeys(features['landmarks'].keys(), 0)
  attributes = dict.fromkeys(features['attributes'].keys(), False)

  def examples(images):
    for i, image in enumerate(images):
      yield (
        str(i),
        {
          'image': io.BytesIO(image) if isinstance(image, bytes) else image,
          'landmarks': landmarks,
          'attributes': attributes,
          'identity': {'Identity_No': i},
        },
      )

  tfds.dataset_builders.store_as_tfds_dataset(
    name='celeb_a',
    version='2.1.0',
    features=features,
    split_datasets={name: examples(x) for name, x in splits.items()},
    data_dir=data_dir,
  )


def sklearn_mixture(init, num_iters: int, ridge: float):
  """scikit-learn's GaussianMixture set to run exactly what `gmm.fit(x,
  init, num_iters, ridge)` runs: the same start (weights, means, and the
  precisions of `init`'s full [K, D, D] or diagonal [K, D] covariances),
  `num_iters` EM iterations (tol=0: never stops early), reg_covar = ridge.
  Unfitted; needs scikit-learn (a test and benchmark dependency).

  After `fit(x)` its `lower_bounds_[i]` is the mean log-likelihood of the
  i-th E-step (before the i-th M-step).
  """
  from sklearn.mixture import GaussianMixture

  init = gmm.GMMParams(*(np.asarray(a, np.float64) for a in init))
  full = init.covariances.ndim == 3
  return GaussianMixture(
    n_components=len(init.weights),
    covariance_type='full' if full else 'diag',
    weights_init=init.weights,
    means_init=init.means,
    precisions_init=(
      np.linalg.inv(init.covariances) if full else 1.0 / init.covariances
    ),
    max_iter=num_iters,
    tol=0.0,
    reg_covar=ridge,
    init_params='random',  # Cheap; replaced by the *_init above.
    random_state=0,
  )
