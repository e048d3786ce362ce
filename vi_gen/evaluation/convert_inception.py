r"""Converts FID Inception-v3 weights to the .npz that `inception.py` loads.

  python -m vi_gen.evaluation.convert_inception \
    --input=pt_inception-2015-12-05-6726825d.pth --output=inception_fid.npz

Sources (the layout is chosen by the file's extension):

* `.pth`: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF
  2015-12-05 graph ported to PyTorch), or any torchvision-style Inception-v3
  state dict with the same keys (`Mixed_5b.branch1x1.conv.weight`,
  `...bn.running_var`, `fc.weight`). Reading it needs `torch`.
* `.npz`: the same state dict saved with numpy, for machines without torch:
  `np.savez(out, **{k: v.numpy() for k, v in state_dict.items()})`.
* `.pickle`: jax-fid's `inception_v3_weights_fid.pickle`, the same weights as
  a nested dict ({'Mixed_5b': {'branch1x1': {'conv': {'kernel'}, 'bn':
  {'scale', 'bias', 'mean', 'var'}}}, 'fc': {'kernel', 'bias'}}). Unpickling
  runs code from the file: convert only files you trust; the .npz written
  here is then read without pickle.

`AuxLogits.*` and `num_batches_tracked` are dropped (not used by the FID
network). The output's SHA-256 is printed; every FID/KID/IS computed with it
records that hash.
"""

import argparse
import os
import pickle
import sys
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from vi_gen import errors
from vi_gen.evaluation import inception

# PyTorch BatchNorm names -> (collection, Flax name).
_BN_NAMES = {
  'weight': ('params', 'scale'),
  'bias': ('params', 'bias'),
  'running_mean': ('batch_stats', 'mean'),
  'running_var': ('batch_stats', 'var'),
}


def _dropped(key: str) -> bool:
  return key.startswith('AuxLogits.') or key.endswith('.num_batches_tracked')


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
  """A torchvision-style Inception-v3 state dict -> the network's variables.

  Conv weights go from OIHW to Flax's HWIO, the fc weight from [out, in] to
  [in, out].

  Raises:
    errors.ConfigError: unknown keys, or the arrays do not fit the network.
  """
  flat = {}
  for key, value in state_dict.items():
    if _dropped(key):
      continue
    value = np.asarray(value, np.float32)
    *module, layer, name = key.split('.')
    if layer == 'conv' and name == 'weight':
      flat['/'.join(['params', *module, 'conv', 'kernel'])] = value.transpose(
        2, 3, 1, 0
      )
    elif layer == 'bn' and name in _BN_NAMES:
      collection, flax_name = _BN_NAMES[name]
      flat['/'.join([collection, *module, 'bn', flax_name])] = value
    elif key == 'fc.weight':
      flat['params/fc/kernel'] = value.T
    elif key == 'fc.bias':
      flat['params/fc/bias'] = value
    else:
      raise errors.ConfigError(f'Unknown key {key!r} in the state dict.')
  inception.check_variables(flat, 'The state dict')
  return traverse_util.unflatten_dict(flat, sep='/')


def from_jax_fid_tree(tree: Mapping) -> dict:
  """jax-fid's nested weights dict -> the network's variables.

  Its convolutions carry a bias entry although the network has none; it
  must be zero and is dropped.

  Raises:
    errors.ConfigError: a non-zero conv bias, or arrays that do not fit.
  """
  flat = {}
  for path, value in traverse_util.flatten_dict(tree).items():
    value = np.asarray(value, np.float32)
    *module, layer, name = path
    if layer == 'conv' and name == 'bias':
      if np.any(value):
        raise errors.ConfigError(f'{"/".join(path)} is a non-zero conv bias.')
      continue
    collection = 'batch_stats' if name in ('mean', 'var') else 'params'
    flat['/'.join([collection, *path])] = value
  inception.check_variables(flat, 'The jax-fid weights')
  return traverse_util.unflatten_dict(flat, sep='/')


def read_weights(path: str) -> dict:
  """The network's variables from a .pth, .npz or .pickle (see module doc)."""
  extension = os.path.splitext(path)[1]
  if extension == '.npz':
    with np.load(path, allow_pickle=False) as f:
      return from_torch_state_dict({k: f[k] for k in f.files})
  if extension == '.pth':
    try:
      import torch
    except ImportError as e:
      raise errors.ConfigError(
        'Reading a .pth needs torch (pip install torch). Without it, save'
        ' the state dict with numpy on a machine that has torch and convert'
        ' the .npz: np.savez(out, **{k: v.numpy() for k, v in sd.items()})'
      ) from e
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
    return from_torch_state_dict({k: v.numpy() for k, v in state_dict.items()})
  if extension == '.pickle':
    with open(path, 'rb') as f:
      return from_jax_fid_tree(pickle.load(f))
  raise errors.ConfigError(
    f'Unknown weights format {extension!r}; expected .pth, .npz or .pickle.'
  )


def convert(input_path: str, output_path: str) -> str:
  """Converts and writes the .npz; returns its SHA-256."""
  inception.save_variables(output_path, read_weights(input_path))
  return inception.sha256(output_path)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--input', required=True, help='.pth, .npz or .pickle')
  parser.add_argument('--output', required=True, help='the .npz to write')
  args = parser.parse_args(argv)
  try:
    digest = convert(args.input, args.output)
  except errors.VIGenError as e:
    sys.exit(f'Error: {e}')
  print(f'Wrote {args.output} (sha256 {digest}).')


if __name__ == '__main__':
  main()
