"""Test fixtures that tests and benchmarks share: data that cannot be
downloaded here, built in its real format so that the real pipelines read
it. Nothing on the training path imports this module.
"""

import io


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
