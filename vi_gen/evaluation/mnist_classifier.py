r"""The MNIST classifier whose penultimate features give MNIST-FID and KID.

  python -m vi_gen.evaluation.mnist_classifier            # held-out accuracy
  python -m vi_gen.evaluation.mnist_classifier --retrain  # train, save, report

Inception features need weights that cannot be downloaded here, so the MNIST
experiments report FID/KID on the features of a small CNN trained by the
project (the usual practice for MNIST, e.g. the "MNIST FID" of Lucic et al.
2018 with a LeNet; numbers are comparable only with the same network, whose
file hash is recorded with every number). It is trained on the first 8000
images of the bundled MNIST (the official 10k test set) and held out on the
last 2000, which come from the harder half of that set (its last 5000 digits
are NIST's test writers, the first 5000 are cleaner); its weights ship in
`vi_gen/assets/mnist_classifier.npz`.

Network: conv3x3(32)-conv3x3(32)-maxpool-conv3x3(64)-conv3x3(64)-maxpool
-conv3x3(64)-maxpool-dense(128)-ReLU-dense(10), ReLU after every conv. The
features are the 128 units of the penultimate layer BEFORE their ReLU: after
it, 38 of them are zero on every bundled digit, which makes the feature
covariance singular (FID's matrix square root then loses accuracy); the
pre-activations carry the same information and have full rank. After
training that layer is rescaled so that its units have mean variance 1 on
the training digits (`standardize`; ReLU is positively homogeneous, so the
logits do not change): KID's kernel (x.y / d + 1)^3 is meant for features of
order 1, and FID is then in units of that variance. Inputs are
[B, 28, 28, 1] in [-1, 1].
"""

import argparse
import functools
import os
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from vi_gen import data, errors

WEIGHTS_PATH = pathlib.Path(__file__).parents[1] / 'assets/mnist_classifier.npz'
NUM_TRAIN = 8000  # The first 8000 bundled images train; the rest are held out.
NUM_FEATURES = 128


class MNISTClassifier(nn.Module):
  """images [B, 28, 28, 1] in [-1, 1] -> (features [B, 128], logits [B, 10])."""

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    for widths in ((32, 32), (64, 64), (64,)):
      for width in widths:
        x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    features = nn.Dense(NUM_FEATURES)(x.reshape(x.shape[0], -1))
    return features, nn.Dense(10)(nn.relu(features))


def bundled_mnist() -> tuple[np.ndarray, np.ndarray]:
  """The bundled 10k MNIST: images [N, 28, 28, 1] in [-1, 1], labels [N]."""
  images = data.bundled_mnist()
  labels = data.read_idx_labels(
    data.BUNDLED_MNIST_DIR / 't10k-labels-idx1-ubyte.gz'
  )
  return images, labels


@jax.jit
def features_and_logits(
  params, images: jax.Array
) -> tuple[jax.Array, jax.Array]:
  return MNISTClassifier().apply({'params': params}, images)


def predict(params, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Features and logits of all `images`, in batches of 1000."""
  outputs = [
    features_and_logits(params, images[i : i + 1000])
    for i in range(0, len(images), 1000)
  ]
  return tuple(
    np.concatenate([np.asarray(o[j]) for o in outputs]) for j in (0, 1)
  )


def accuracy(params, images: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(predict(params, images)[1], -1) == labels))


def _shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Each image translated by up to `max_shift` pixels, the border filled
  with the background value -1."""
  padded = jnp.pad(
    images,
    ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
    constant_values=-1.0,
  )
  offsets = jax.random.randint(key, (len(images), 2), 0, 2 * max_shift + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (28, 28, 1))

  return jax.vmap(crop)(padded, offsets)


def train(
  images: np.ndarray,
  labels: np.ndarray,
  seed: int = 0,
  epochs: int = 30,
  batch_size: int = 128,
  learning_rate: float = 1e-3,
) -> dict:
  """Adam with cosine decay, on images shifted at random by up to 2 pixels
  (augmentation: 8000 images are few for a CNN)."""
  steps_per_epoch = len(images) // batch_size
  tx = optax.adam(
    optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  )
  model = MNISTClassifier()
  key = jax.random.key(seed)
  params = model.init(key, jnp.zeros((1, 28, 28, 1)))['params']
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    x = _shift(key, x, 2)

    def loss_fn(p):
      logits = model.apply({'params': p}, x)[1]
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for epoch in range(epochs):
    order = np.random.default_rng([seed, epoch]).permutation(len(images))
    for i in range(steps_per_epoch):
      ids = order[i * batch_size : (i + 1) * batch_size]
      key = jax.random.fold_in(jax.random.key(seed), epoch * 1000 + i)
      params, opt_state = step(
        params, opt_state, images[ids], labels[ids].astype(np.int32), key
      )
  return params


def standardize(params: dict, images: np.ndarray) -> dict:
  """The same classifier with features of mean variance 1 on `images`.

  Scales the penultimate layer by c and the last layer's kernel by 1 / c:
  relu(c h) = c relu(h), so the logits are unchanged.
  """
  features, _ = predict(params, images)
  c = 1.0 / np.sqrt(np.mean(np.var(features, axis=0)))
  dense_1 = params['Dense_1']
  return {
    **params,
    'Dense_0': jax.tree.map(lambda x: x * c, params['Dense_0']),
    'Dense_1': {**dense_1, 'kernel': dense_1['kernel'] / c},
  }


def save(path: os.PathLike, params) -> None:
  """A flat float32 .npz (about 0.7 MB), read back without pickle."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  with open(path, 'wb') as f:
    np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


@functools.cache
def _load_cached(path: str, mtime: float) -> dict:
  del mtime  # Part of the cache key only: a retrained file is reloaded.
  with np.load(path, allow_pickle=False) as f:
    flat = {k: jnp.asarray(f[k]) for k in f.files}
  return traverse_util.unflatten_dict(flat, sep='/')


def load(path: os.PathLike | str = WEIGHTS_PATH) -> dict:
  """The classifier's params from `path` (default: the shipped file)."""
  if not os.path.isfile(path):
    raise errors.ConfigError(
      f'MNIST classifier weights {str(path)!r} not found; train them with'
      ' `python -m vi_gen.evaluation.mnist_classifier --retrain`.'
    )
  return _load_cached(str(path), os.path.getmtime(path))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--retrain', action='store_true', help='train and save the weights'
  )
  parser.add_argument(
    '--weights', default=str(WEIGHTS_PATH), help='where they are read/written'
  )
  parser.add_argument('--seed', type=int, default=0, help='init and order')
  args = parser.parse_args(argv)
  images, labels = bundled_mnist()
  if args.retrain:
    params = train(images[:NUM_TRAIN], labels[:NUM_TRAIN], seed=args.seed)
    save(args.weights, standardize(params, images[:NUM_TRAIN]))
    print(f'Wrote {args.weights}.')
  try:
    params = load(args.weights)
  except errors.VIGenError as e:
    sys.exit(f'Error: {e}')
  held_out = accuracy(params, images[NUM_TRAIN:], labels[NUM_TRAIN:])
  train_acc = accuracy(params, images[:NUM_TRAIN], labels[:NUM_TRAIN])
  print(
    f'MNIST classifier: held-out accuracy {100 * held_out:.2f}% (bundled'
    f' images {NUM_TRAIN}-9999), training accuracy {100 * train_acc:.2f}%.'
  )


if __name__ == '__main__':
  main()
