"""launch/: the Colab notebook runs top to bottom on a CPU, the scripts parse
and issue the commands they document.

The notebook's code cells run in a subprocess with `exec`, as a kernel would
run them, with VI_GEN_NOTEBOOK_TEST set: the `test` preset, no installs, no
Drive. Small stand-ins for the kernel's `get_ipython()` and for
`IPython.display` record what the notebook asks of them.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch')
NOTEBOOK = os.path.join(LAUNCH, 'colab.ipynb')

RUN_CELLS = r"""
import json, sys, types

calls = {'magics': [], 'system': [], 'displayed': []}


class Shell:
  def run_line_magic(self, name, line):
    calls['magics'].append([name, line])

  def system(self, command):
    calls['system'].append(command)


class Image:
  def __init__(self, filename):
    self.filename = filename


display = types.ModuleType('IPython.display')
display.Image = Image
display.display = lambda image: calls['displayed'].append(image.filename)
ipython = types.ModuleType('IPython')
ipython.display = display
sys.modules.update({'IPython': ipython, 'IPython.display': display})

shell = Shell()
namespace = {'__name__': '__main__', 'get_ipython': lambda: shell}
with open(sys.argv[1]) as f:
  cells = json.load(f)['cells']
for cell in cells:
  if cell['cell_type'] == 'code':
    exec(''.join(cell['source']), namespace)
with open(sys.argv[2], 'w') as f:
  json.dump(calls, f)
"""


def test_notebook_is_a_clean_nbformat_4_notebook():
  with open(NOTEBOOK) as f:
    notebook = json.load(f)
  assert notebook['nbformat'] == 4
  assert notebook['metadata']['kernelspec']['name'] == 'python3'
  kinds = [cell['cell_type'] for cell in notebook['cells']]
  assert kinds[0] == 'markdown' and kinds.count('code') >= 5
  intro = ''.join(notebook['cells'][0]['source'])
  assert 'What it needs' in intro and 'What it costs' in intro
  for cell in notebook['cells']:
    assert isinstance(cell['source'], list)
    if cell['cell_type'] == 'code':
      assert cell['outputs'] == [] and cell['execution_count'] is None
      compile(''.join(cell['source']), 'cell', 'exec')


@pytest.mark.slow
def test_notebook_cells_run_top_to_bottom_on_cpu(tmp_path):
  workdir = tmp_path / 'run'
  calls_file = tmp_path / 'calls.json'
  result = subprocess.run(
    [sys.executable, '-c', RUN_CELLS, NOTEBOOK, str(calls_file)],
    cwd=REPO,
    env={
      **os.environ,
      'VI_GEN_NOTEBOOK_TEST': str(workdir),
      'PYTHONPATH': REPO,
      'CUDA_VISIBLE_DEVICES': '',
    },
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  assert '-m vi_gen.main --config=configs/gan.py:test' in result.stdout
  with open(calls_file) as f:
    calls = json.load(f)
  assert calls['system'] == []  # no installs, no git clone
  assert calls['displayed'] == [str(workdir / 'samples' / 'step_0000004.png')]
  assert calls['magics'] == [
    ['load_ext', 'tensorboard'],
    ['tensorboard', f'--logdir "{workdir}"'],
  ]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']


def shell_words(line: str) -> list[str]:
  """The words of one line of `printf %q` output, split by bash itself."""
  words = subprocess.run(
    [
      'bash',
      '-c',
      'eval "words=($1)"; printf "%s\\0" "${words[@]}"',
      '_',
      line,
    ],
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  return words.split('\0')[:-1]


def dry_run(script: str, *args: str, **env: str) -> list[list[str]]:
  """The commands `launch/<script> args` would run, as lists of words."""
  result = subprocess.run(
    [os.path.join(LAUNCH, script), *args],
    cwd=REPO,
    env={**os.environ, 'DRY_RUN': '1', **env},
    capture_output=True,
    text=True,
    check=True,
  )
  return [shell_words(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize('script', ['gpu.sh', 'tpu_vm.sh'])
def test_script_parses_and_says_what_it_needs_and_costs(script):
  path = os.path.join(LAUNCH, script)
  subprocess.run(['bash', '-n', path], check=True)
  assert os.access(path, os.X_OK)
  with open(path) as f:
    header = f.read().split('set -euo pipefail')[0]
  assert '# Needs:' in header and '# Costs:' in header
  usage = subprocess.run([path], capture_output=True, text=True)
  assert usage.returncode == 2 and 'Usage' in usage.stdout


def test_gpu_script_trains_on_all_local_gpus_or_under_slurm():
  env = {'WORKDIR': 'runs/x', 'DATA_DIR': '/data/tfds'}
  train = ['.venv/bin/python', '-m', 'vi_gen.main', '--config=configs/gan.py']
  train += ['--workdir=runs/x', '--config.run.data_dir=/data/tfds']
  assert dry_run('gpu.sh', 'train', '--config.run.num_steps=5', **env) == [
    [*train, '--config.run.num_steps=5']
  ]
  (slurm,) = dry_run('gpu.sh', 'slurm', '2', '--config.batch_size=128', **env)
  assert slurm[:4] == [
    'srun',
    '--nodes=2',
    '--ntasks-per-node=8',
    '--gpus-per-node=8',
  ]
  assert slurm[4:] == [*train, '--distributed', '--config.batch_size=128']


def test_tpu_script_runs_the_cli_on_every_worker_with_the_switch():
  env = {'PROJECT': 'p', 'ZONE': 'z', 'BUCKET': 'b', 'SPOT': '1'}
  where = ['--project=p', '--zone=z']
  (create,) = dry_run('tpu_vm.sh', 'create', **env)
  assert create[:6] == [
    'gcloud',
    'compute',
    'tpus',
    'tpu-vm',
    'create',
    'vi-gen',
  ]
  assert '--accelerator-type=v5litepod-8' in create and '--spot' in create
  archive, copy, setup = dry_run('tpu_vm.sh', 'setup', **env)
  assert archive[:2] == ['git', 'archive'] and '--worker=all' in copy
  assert setup[-2:-1] == ['--worker=all'] and 'uv pip install' in setup[-1]
  (train,) = dry_run('tpu_vm.sh', 'train', '--config.run.num_steps=5', **env)
  assert train[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'vi-gen']
  assert train[6:8] == where and train[8] == '--worker=all'
  remote = shlex.split(train[9].removeprefix('--command='))
  main = remote.index('vi_gen.main')
  assert remote[main - 2 : main + 5] == [
    '.venv/bin/python',
    '-m',
    'vi_gen.main',
    '--distributed',
    '--config=configs/gan.py',
    '--workdir=$HOME/bucket/runs/gan_celeba',
    '--config.run.data_dir=$HOME/tensorflow_datasets',
  ]
  assert remote[main + 5] == '--config.run.num_steps=5'
  fetch = dry_run('tpu_vm.sh', 'fetch', **env)[-1]
  assert fetch == [
    'gcloud',
    'storage',
    'cp',
    '-r',
    'gs://b/runs/gan_celeba',
    'runs/',
  ]
  assert dry_run('tpu_vm.sh', 'delete', **env)[0][-1] == '--quiet'
