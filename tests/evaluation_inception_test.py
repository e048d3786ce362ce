"""The FID Inception-v3: weights conversion and files, shapes, and the
architecture against Keras' InceptionV3 (TensorFlow's reference network).

No real weights are available offline: the converter is tested on synthetic
state dicts with pytorch-fid's key names and shapes, filled at random.
"""

import hashlib
import pickle

import jax
import numpy as np
import pytest
from flax import traverse_util

from vi_gen import errors
from vi_gen.evaluation import convert_inception, inception

# Keys and shapes of pytorch-fid's pt_inception-2015-12-05-6726825d.pth
# (torchvision layout: OIHW convs, 1008 classes).
KNOWN_TORCH_SHAPES = {
  'Conv2d_1a_3x3.conv.weight': (32, 3, 3, 3),
  'Conv2d_4a_3x3.bn.running_var': (192,),
  'Mixed_5b.branch_pool.conv.weight': (32, 192, 1, 1),
  'Mixed_6e.branch7x7_2.conv.weight': (192, 192, 1, 7),
  'Mixed_7a.branch7x7x3_4.conv.weight': (192, 192, 3, 3),
  'Mixed_7c.branch3x3dbl_3b.conv.weight': (384, 384, 3, 1),
  'fc.weight': (1008, 2048),
  'fc.bias': (1008,),
}
NUM_CONVS = 94  # BasicConv2d layers of Inception-v3 without AuxLogits.


def random_variables(seed: int = 0) -> dict:
  """Variables of the network's shapes, BatchNorm variances positive."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(inception.abstract_variables(), sep='/')
  values = {}
  for name, shape in flat.items():
    value = rng.normal(0, 0.1, size=shape.shape).astype(np.float32)
    if name.endswith('/var'):
      value = rng.uniform(0.5, 1.5, size=shape.shape).astype(np.float32)
    values[name] = value
  return traverse_util.unflatten_dict(values, sep='/')


def to_torch_state_dict(variables: dict) -> dict:
  """Our variables in the PyTorch layout, written independently of the
  converter."""
  torch_names = {
    'scale': 'weight',
    'bias': 'bias',
    'mean': 'running_mean',
    'var': 'running_var',
  }
  state_dict = {}
  for path, value in traverse_util.flatten_dict(variables).items():
    collection, *module, leaf = path
    if module == ['fc']:
      state_dict[f'fc.{"weight" if leaf == "kernel" else "bias"}'] = (
        value.T if leaf == 'kernel' else value
      )
    elif leaf == 'kernel':
      state_dict['.'.join(module[:-1]) + '.conv.weight'] = value.transpose(
        3, 2, 0, 1
      )
    else:
      state_dict['.'.join(module[:-1]) + '.bn.' + torch_names[leaf]] = value
  return state_dict


def assert_trees_equal(a, b):
  flat_a, flat_b = (traverse_util.flatten_dict(t) for t in (a, b))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[k]), flat_b[k])


def test_converts_a_pytorch_fid_state_dict(tmp_path):
  variables = random_variables()
  state_dict = to_torch_state_dict(variables)
  assert len(state_dict) == NUM_CONVS * 5 + 2
  for key, shape in KNOWN_TORCH_SHAPES.items():
    assert state_dict[key].shape == shape, key
  # What torchvision adds and the FID network does not use.
  state_dict['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.array(0)
  state_dict['AuxLogits.fc.weight'] = np.zeros((1008, 768), np.float32)
  np.savez(tmp_path / 'state_dict.npz', **state_dict)

  digest = convert_inception.convert(
    str(tmp_path / 'state_dict.npz'), str(tmp_path / 'out.npz')
  )
  loaded = inception.load_variables(tmp_path / 'out.npz')
  assert_trees_equal(loaded, variables)
  with open(tmp_path / 'out.npz', 'rb') as f:
    assert digest == hashlib.sha256(f.read()).hexdigest()


def test_converts_jax_fid_weights_and_drops_only_zero_conv_biases(tmp_path):
  variables = random_variables(1)
  tree = {}
  for path, value in traverse_util.flatten_dict(variables).items():
    *module, leaf = path[1:]
    node = tree
    for part in module:
      node = node.setdefault(part, {})
    node[leaf] = value
    if leaf == 'kernel' and module[-1] == 'conv':
      node['bias'] = np.zeros(value.shape[-1], np.float32)
  with open(tmp_path / 'w.pickle', 'wb') as f:
    pickle.dump(tree, f)
  assert_trees_equal(
    convert_inception.read_weights(str(tmp_path / 'w.pickle')), variables
  )
  tree['Mixed_5b']['branch1x1']['conv']['bias'][0] = 1.0
  with pytest.raises(errors.ConfigError, match='non-zero conv bias'):
    convert_inception.from_jax_fid_tree(tree)


def test_rejects_incomplete_or_unknown_weights(tmp_path):
  with pytest.raises(errors.ConfigError, match='convert_inception'):
    inception.load_variables(tmp_path / 'missing.npz')
  state_dict = to_torch_state_dict(random_variables())
  del state_dict['Mixed_6b.branch7x7_3.conv.weight']
  with pytest.raises(errors.ConfigError, match='Mixed_6b/branch7x7_3'):
    convert_inception.from_torch_state_dict(state_dict)
  with pytest.raises(errors.ConfigError, match='Unknown key'):
    convert_inception.from_torch_state_dict({'Mixed_5b.extra.weight': 0})
  flat = traverse_util.flatten_dict(random_variables(), sep='/')
  flat['params/fc/kernel'] = np.zeros((2048, 1000), np.float32)
  np.savez(tmp_path / 'bad.npz', **flat)
  with pytest.raises(errors.ConfigError, match='params/fc/kernel'):
    inception.load_variables(tmp_path / 'bad.npz')


@pytest.mark.slow
def test_pool3_features_of_299_inputs_round_trip_through_the_file(tmp_path):
  variables = random_variables()
  images = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1))
  assert inception.preprocess(images).shape == (2, 299, 299, 3)
  features, logits = inception.features_and_logits(variables, images)
  assert features.shape == (2, inception.NUM_FEATURES) == (2, 2048)
  assert logits.shape == (2, 1008)
  assert np.all(np.isfinite(features)) and np.all(features >= 0)  # ReLU.
  inception.save_variables(tmp_path / 'w.npz', variables)
  again, _ = inception.features_and_logits(
    inception.load_variables(tmp_path / 'w.npz'), images
  )
  np.testing.assert_array_equal(again, features)


# Creation order of the BasicConv2d layers per block (torchvision's and
# Keras' order; Flax sorts its variables by name, so it cannot tell).
_BLOCKS = {
  'A': (
    'branch1x1 branch5x5_1 branch5x5_2 branch3x3dbl_1 branch3x3dbl_2'
    ' branch3x3dbl_3 branch_pool'
  ),
  'B': 'branch3x3 branch3x3dbl_1 branch3x3dbl_2 branch3x3dbl_3',
  'C': (
    'branch1x1 branch7x7_1 branch7x7_2 branch7x7_3 branch7x7dbl_1'
    ' branch7x7dbl_2 branch7x7dbl_3 branch7x7dbl_4 branch7x7dbl_5 branch_pool'
  ),
  'D': (
    'branch3x3_1 branch3x3_2 branch7x7x3_1 branch7x7x3_2 branch7x7x3_3'
    ' branch7x7x3_4'
  ),
  'E': (
    'branch1x1 branch3x3_1 branch3x3_2a branch3x3_2b branch3x3dbl_1'
    ' branch3x3dbl_2 branch3x3dbl_3a branch3x3dbl_3b branch_pool'
  ),
}
_LAYOUT = 'Mixed_5b:A Mixed_5c:A Mixed_5d:A Mixed_6a:B Mixed_6b:C Mixed_6c:C'
_LAYOUT += ' Mixed_6d:C Mixed_6e:C Mixed_7a:D Mixed_7b:E Mixed_7c:E'


def conv_order() -> list[tuple[str, ...]]:
  stem = ('1a_3x3', '2a_3x3', '2b_3x3', '3b_1x1', '4a_3x3')
  names = [(f'Conv2d_{n}',) for n in stem]
  for entry in _LAYOUT.split():
    block, kind = entry.split(':')
    names += [(block, branch) for branch in _BLOCKS[kind].split()]
  return names


@pytest.mark.slow
def test_matches_keras_inception_v3_up_to_mixed_7b():
  """Keras' InceptionV3 is TF's network with average pools that skip the
  padding (as the FID variant), so with the same random weights every block
  up to Mixed_7b agrees; Mixed_7c differs by the FID variant's max pool.
  139x139 inputs leave Mixed_7c a 3x3 map, where the pools differ."""
  import tensorflow as tf

  size = 139
  keras = tf.keras.applications.InceptionV3(
    include_top=False, weights=None, input_shape=(size, size, 3)
  )

  def creation_index(layer):
    suffix = layer.name.rsplit('_', 1)[-1]
    return int(suffix) if suffix.isdigit() else 0

  convs = sorted(
    (x for x in keras.layers if isinstance(x, tf.keras.layers.Conv2D)),
    key=creation_index,
  )
  norms = sorted(
    (
      x
      for x in keras.layers
      if isinstance(x, tf.keras.layers.BatchNormalization)
    ),
    key=creation_index,
  )
  names = conv_order()
  assert len(convs) == len(norms) == len(names) == NUM_CONVS
  rng = np.random.default_rng(0)
  variables = random_variables()
  for name, conv, norm in zip(names, convs, norms, strict=True):
    params = variables['params']
    stats = variables['batch_stats']
    for part in name:
      params, stats = params[part], stats[part]
    (kernel,) = conv.get_weights()  # Keras: HWIO, as Flax.
    assert params['conv']['kernel'].shape == kernel.shape, name
    params['conv']['kernel'] = kernel
    beta, mean = (rng.normal(0, 0.1, kernel.shape[-1:]) for _ in range(2))
    var = rng.uniform(0.5, 1.5, kernel.shape[-1:])
    norm.set_weights([beta, mean, var])  # Keras: no scale (gamma = 1).
    params['bn']['scale'] = np.ones_like(beta)
    params['bn']['bias'], stats['bn']['mean'], stats['bn']['var'] = (
      beta,
      mean,
      var,
    )
  x = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  _, intermediates = jax.jit(
    lambda v, x: inception.FIDInceptionV3().apply(
      v, x, capture_intermediates=True, mutable=['intermediates']
    )
  )(variables, x)
  ours = {
    k: np.asarray(v['__call__'][0])
    for k, v in intermediates['intermediates'].items()
    if k.startswith('Mixed')
  }
  outputs = {
    'Mixed_5d': 'mixed2',
    'Mixed_6e': 'mixed7',
    'Mixed_7b': 'mixed9',
    'Mixed_7c': 'mixed10',
  }
  reference = tf.keras.Model(
    keras.input, [keras.get_layer(n).output for n in outputs.values()]
  )(x, training=False)
  for (block, _), theirs in zip(outputs.items(), reference, strict=True):
    theirs = theirs.numpy()
    assert ours[block].shape == theirs.shape
    if block == 'Mixed_7c':
      assert np.max(np.abs(ours[block] - theirs)) > 0.01
    else:
      np.testing.assert_allclose(ours[block], theirs, atol=1e-4)


@pytest.mark.slow
def test_resize_is_tensorflows_half_pixel_bilinear():
  """pytorch-fid's F.interpolate(bilinear, align_corners=False) samples as
  TF2's tf.image.resize(bilinear) without antialiasing."""
  import tensorflow as tf

  images = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 3))
  theirs = tf.image.resize(images, (299, 299), 'bilinear', antialias=False)
  np.testing.assert_allclose(
    inception.preprocess(images.astype(np.float32)), theirs, atol=1e-5
  )
