"""Data parallelism: the same training on 1, 4 and 8 devices and on 2 hosts.

One `jax.jit` iteration over a ('data',) mesh, parameters replicated, the
batch sharded. This process has 4 fake CPU devices (conftest.py); the 1- and
8-device runs and the 2-process run (2 devices each, `jax.distributed` over
localhost) are subprocesses running this file as a script.

Tolerance. Every device count computes the same function of the same
global batch (BatchNorm statistics are those of the global batch under jit),
but each batch reduction is summed in a different order: one sum over 8 rows
on 1 device, per-device partial sums and an all-reduce on 4 or 8. The
float32 results differ by a few ulps (~1e-7 relative) per reduction, and
Adam turns a relative change of a gradient into an update change of about
lr times it. Measured after 3 iterations (GAN and VAE, 4 and 8 devices):
at most 4e-8 on parameters, BatchNorm statistics and the old generator,
and 7e-7 on Adam's first moments, which are running means of raw gradients
(not normalized by Adam), so their near-zero coordinates keep the
gradients' absolute rounding. Hence RTOL = 1e-5 and ATOL = 1e-6 (25x
margin on the parameters), OPT_ATOL = 1e-5 on optimizer states. A semantic
difference is far above that: one example of the first batch replaced
moves the parameters by 1.2e-3 (GAN) and 5.4e-3 (VAE) after 3 iterations.
"""

import argparse
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import AxisType

from configs import gan as gan_config
from configs import vae as vae_config
from vi_gen import errors, experiment, parallel, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {'gan': gan_config, 'vae': vae_config}
RTOL, ATOL, OPT_ATOL = 1e-5, 1e-6, 1e-5


def parity_config(model: str):
  """The `test` preset (bundled MNIST, tiny networks), 3 iterations."""
  config = MODELS[model].get_config('test')
  config.run.num_steps = 3
  return config


def state_arrays(state) -> dict[str, np.ndarray]:
  flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(state))
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}


def assert_states_close(a: dict, b: dict) -> None:
  assert sorted(a) == sorted(b)
  for name in a:
    atol = OPT_ATOL if name.startswith('.opt_states') else ATOL
    np.testing.assert_allclose(a[name], b[name], RTOL, atol, err_msg=name)


def assert_states_equal(a: dict, b: dict) -> None:
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def worker_command(devices: int, out: str, **jobs) -> list[str]:
  """`python tests/parallel_test.py`: train and/or restore, dump the states."""
  command = [sys.executable, __file__, f'--devices={devices}', f'--out={out}']
  for job, models in jobs.items():
    command += [f'--{job}={model}={workdir}' for model, workdir in models]
  return command


def start(command: list[str]) -> subprocess.Popen:
  return subprocess.Popen(
    command,
    cwd=REPO,
    env={**os.environ, 'PYTHONPATH': REPO, 'CUDA_VISIBLE_DEVICES': ''},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def finish(process: subprocess.Popen) -> None:
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output[-3000:]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Runs:
  """States of every run, as {name: array} dicts."""

  def __init__(self, root):
    self.root = root
    self.workdir = lambda run, model: str(root / run / model)
    self.dump = lambda run, job, model: dict(
      np.load(root / run / f'{job}_{model}.npz')
    )


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> Runs:
  """Trains on 1 and 8 devices and on 2 processes in subprocesses while this
  process trains on 4; then restores the 4-device checkpoint on 1 device
  (a subprocess) and the 1-device and 2-process ones here."""
  runs = Runs(tmp_path_factory.mktemp('parallel'))
  subprocesses = [
    start(
      worker_command(
        devices,
        str(runs.root / run),
        train=[(m, runs.workdir(run, m)) for m in MODELS],
      )
    )
    for devices, run in ((1, 'one'), (8, 'eight'))
  ]
  address = f'127.0.0.1:{free_port()}'
  subprocesses += [
    start(
      worker_command(2, str(runs.root / 'hosts'), train=[('gan', '')])
      + [f'--process_id={i}', '--num_processes=2', f'--coordinator={address}']
    )
    for i in range(2)
  ]
  runs.four = {}
  for model in MODELS:
    state = train.train_and_evaluate(
      parity_config(model), runs.workdir('four', model)
    )
    runs.four[model] = state_arrays(state)
  subprocesses.append(
    start(
      worker_command(
        1,
        str(runs.root / 'one'),
        restore=[('gan', runs.workdir('four', 'gan'))],
      )
    )
  )
  for process in subprocesses:
    finish(process)
  config = parity_config('gan')
  setup = experiment.Experiment(config)
  runs.restored_on_four = {
    run: setup.restore_or_none(runs.workdir(run, 'gan'))
    for run in ('one', 'hosts')
  }
  return runs


@pytest.mark.slow
@pytest.mark.parametrize('model', list(MODELS))
def test_same_parameters_on_1_4_and_8_devices(runs, model):
  four = runs.four[model]
  assert int(four['.step']) == 3
  for run in ('one', 'eight'):
    assert_states_close(runs.dump(run, 'train', model), four)


@pytest.mark.slow
def test_two_processes_train_like_one_process(runs):
  """2 hosts x 2 devices: each host feeds its half of every global batch
  (`jax.make_array_from_process_local_data`), all hosts save, process 0
  alone writes summaries and sample grids."""
  hosts = runs.dump('hosts', 'train', 'gan')
  assert_states_close(hosts, runs.four['gan'])
  restored = state_arrays(runs.restored_on_four['hosts'])
  assert_states_equal(restored, hosts)
  workdir = runs.workdir('hosts', 'gan')
  events = [f for f in os.listdir(workdir) if f.startswith('events.out')]
  assert len(events) == 1
  assert sorted(os.listdir(os.path.join(workdir, 'samples'))) == [
    'step_0000002.png',
    'step_0000003.png',
  ]


@pytest.mark.slow
def test_checkpoint_written_on_4_devices_restores_on_1(runs):
  assert_states_equal(runs.dump('one', 'restore', 'gan'), runs.four['gan'])


@pytest.mark.slow
def test_checkpoint_written_on_1_device_restores_on_4(runs):
  restored = runs.restored_on_four['one']
  assert_states_equal(state_arrays(restored), runs.dump('one', 'train', 'gan'))
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding.is_fully_replicated
    assert len(leaf.sharding.device_set) == 4


@pytest.mark.slow
def test_command_line_trains_on_two_processes_given_the_cluster(tmp_path):
  """`python -m vi_gen.main --distributed` with the coordinator flags that
  plain GPU machines need: both processes train, process 0 writes."""
  address = f'127.0.0.1:{free_port()}'
  processes = [
    start(
      [
        sys.executable,
        '-m',
        'vi_gen.main',
        '--config=configs/gan.py:test',
        f'--workdir={tmp_path}',
        '--distributed',
        f'--coordinator_address={address}',
        '--num_processes=2',
        f'--process_id={i}',
      ]
    )
    for i in range(2)
  ]
  for process in processes:
    finish(process)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  assert len(os.listdir(tmp_path / 'samples')) == 2


@pytest.mark.slow
def test_cluster_flags_without_distributed_are_refused(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'vi_gen.main',
      '--config=configs/gan.py:test',
      f'--workdir={tmp_path}/run',
      '--num_processes=2',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0
  assert '--num_processes need --distributed' in result.stderr
  assert not (tmp_path / 'run').exists()


def test_mesh_is_one_auto_data_axis_over_all_devices():
  mesh = parallel.create_mesh()
  assert dict(mesh.shape) == {'data': 4}
  assert mesh.axis_types == (AxisType.Auto,)


def test_batch_must_split_evenly_over_devices():
  parallel.check_batch_size(8)
  with pytest.raises(errors.ConfigError, match='multiple of 4'):
    parallel.check_batch_size(6)


def test_batch_norm_normalizes_with_global_batch_statistics():
  """Each device holds 2 rows of very different means: per-device
  statistics (pmap's) would map every shard to [-1, 1]."""
  mesh = parallel.create_mesh()
  x = np.repeat(np.arange(8, dtype=np.float32)[:, None] ** 2, 3, axis=1)
  batch_norm = nn.BatchNorm(use_running_average=False, momentum=0.9)
  variables = batch_norm.init(jax.random.key(0), x)
  apply = jax.jit(lambda v, x: batch_norm.apply(v, x, mutable='batch_stats'))
  y, updates = apply(
    variables, parallel.to_global(x, parallel.batch_sharding(mesh))
  )
  expected = (x - x.mean(0)) / np.sqrt(x.var(0) + batch_norm.epsilon)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  running_mean = updates['batch_stats']['mean']
  np.testing.assert_allclose(running_mean, 0.1 * x.mean(0), rtol=1e-6)


def test_to_global_shards_the_example_axis():
  """[k, B, ...] host batches: axis 1 (examples) over 'data', in order."""
  mesh = parallel.create_mesh()
  local = np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)
  batch = parallel.to_global(local, parallel.batch_sharding(mesh, 1))
  assert batch.shape == (2, 8, 3)
  np.testing.assert_array_equal(np.asarray(batch), local)
  for shard in batch.addressable_shards:
    assert shard.data.shape == (2, 2, 3)
    np.testing.assert_array_equal(shard.data, local[shard.index])


def main() -> None:
  """The subprocess side: train and restore on `--devices` CPU devices."""
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--train', action='append', default=[])
  parser.add_argument('--restore', action='append', default=[])
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--coordinator', default='')
  args = parser.parse_args()
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', args.devices)
  if args.num_processes > 1:
    jax.distributed.initialize(
      args.coordinator, args.num_processes, args.process_id
    )
  assert jax.device_count() == args.devices * args.num_processes
  os.makedirs(args.out, exist_ok=True)
  for job in ('train', 'restore'):
    for spec in getattr(args, job):
      model, workdir = spec.split('=', 1)
      workdir = workdir or os.path.join(args.out, model)
      config = parity_config(model)
      if job == 'train':
        state = train.train_and_evaluate(config, workdir)
      else:
        state = experiment.Experiment(config).restore_or_none(workdir)
      arrays = state_arrays(state)
      if jax.process_index() == 0:
        np.savez(os.path.join(args.out, f'{job}_{model}.npz'), **arrays)


if __name__ == '__main__':
  main()
