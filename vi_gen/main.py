r"""Command-line entry point; the work happens in `vi_gen.train`.

  python -m vi_gen.main --config=configs/gan.py:mnist [--workdir=runs/x]
  python -m vi_gen.main --config=configs/gan.py:mnist --mode=sample \
      --num_samples=1000 --output=samples.npy
  python -m vi_gen.main --config=configs/gan.py:mnist --mode=eval
  python -m vi_gen.main --config=configs/vae.py:mnist --mode=sample \
      --output=samples.npy --encode=codes.npy

Without --workdir the run goes to runs/<model>[_<preset>]. Running the same
command again resumes from the latest checkpoint there, exactly. SIGTERM (a
preempted VM, a scheduler) saves a checkpoint of the current step and exits
0. Set VI_GEN_DISTRIBUTED=1 (or --distributed) on every host of a multi-host
job; outside TPU VMs, Slurm and Open MPI also --coordinator_address,
--num_processes and --process_id.
"""

import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vi_gen import checkpoint, errors

# TensorFlow only reads, decodes, crops and resizes data here: none of the
# ops oneDNN replaces, and its CelebA preprocessing is bit-identical either
# way (tests/console_test.py), so its "oneDNN custom operations are on"
# notice, printed twice at import with absl's "before InitializeLog"
# warning, is noise. TF_CPP_MIN_LOG_LEVEL no longer hides it (TF >= 2.17
# logs through absl).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Config file, optionally with :preset.', lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Run directory (default: runs/<model>[_<preset>]).'
)
_MODE = flags.DEFINE_enum(
  'mode',
  'train',
  ['train', 'sample', 'eval'],
  'train (or resume); sample from, or evaluate, the latest checkpoint.',
)
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1000, '--mode=sample: N.')
_OUTPUT = flags.DEFINE_string(
  'output', None, '--mode=sample: output .npy file.'
)
_SAMPLE_SEED = flags.DEFINE_integer('sample_seed', 0, '--mode=sample: seed.')
_ENCODE = flags.DEFINE_string(
  'encode',
  None,
  '--mode=sample, models with an encoder: also save E(x) of --num_samples'
  ' real examples, drawn as the evaluation draws them, to this .npy file.',
)
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  bool(os.environ.get('VI_GEN_DISTRIBUTED')),
  'Call jax.distributed.initialize() (multi-host runs).',
)
# JAX detects these on TPU VMs, under Slurm and Open MPI; elsewhere (plain
# GPU machines) every process needs all three.
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', None, '--distributed: host:port of process 0.'
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, '--distributed: how many processes in all.'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, '--distributed: this process, 0 .. num_processes-1.'
)
flags.mark_flags_as_required(['config'])


class _QuietLibraries(pylogging.Filter):
  """Drops library lines that ask nothing of the user: Orbax's per-save
  INFO lines, which bury the training log, and its warning that a
  directory opened read-only (by --mode=sample and --mode=eval, on
  purpose) is read-only; JAX's INFO line that libtpu is not installed,
  on every machine without TPUs (a TPU that fails to start says more)."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.name.startswith('jax'):
      return not (
        record.levelno < pylogging.WARNING
        and 'Failed to open libtpu.so' in record.getMessage()
      )
    if '/orbax/' not in record.pathname:
      return True
    if record.getMessage().startswith('Given directory is read only'):
      return False
    return record.levelno >= pylogging.WARNING


def _run(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Hide GPUs from TensorFlow (used for tf.data and summaries only), or it
  # may reserve memory that JAX needs.
  import tensorflow as tf

  tf.config.set_visible_devices([], 'GPU')
  import jax
  import numpy as np

  from vi_gen import experiment, inference, train

  cluster = {
    'coordinator_address': _COORDINATOR.value,
    'num_processes': _NUM_PROCESSES.value,
    'process_id': _PROCESS_ID.value,
  }
  given = [f'--{name}' for name, value in cluster.items() if value is not None]
  if given and not _DISTRIBUTED.value:
    raise app.UsageError(f'{", ".join(given)} need --distributed.')
  if _DISTRIBUTED.value:
    jax.distributed.initialize(**cluster)
  logging.info(
    'JAX process %d/%d, local devices: %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  config = _CONFIG.value
  workdir = _WORKDIR.value or experiment.default_workdir(config)
  if _MODE.value == 'train':
    logging.info('Training %s in %s', config.model, workdir)
    train.train_and_evaluate(config, workdir)
    return
  if _MODE.value == 'eval':
    from vi_gen.evaluation import run as eval_run

    print(eval_run.to_json(inference.evaluate(config, workdir)))
    return
  if not _OUTPUT.value:
    raise errors.ConfigError('--mode=sample needs --output=FILE.npy')
  outputs = {
    _OUTPUT.value: inference.sample(
      config, workdir, _NUM_SAMPLES.value, _SAMPLE_SEED.value
    )
  }
  if _ENCODE.value:
    outputs[_ENCODE.value] = inference.encode(
      config, workdir, _NUM_SAMPLES.value
    )
  if jax.process_index() == 0:
    for path, array in outputs.items():
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      np.save(path, array)
      print(f'Wrote {array.shape} float32 array to {path}')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config errors as one line instead of a trace.

  ml_collections raises AttributeError for an unknown --config.key and
  ValueError for an unknown preset, both while the flags are parsed.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # A failing get_config() arrives with its traceback inside the message.
    lines = [line for line in str(e).splitlines() if line.strip()]
    message = lines[0] if len(lines) == 1 else f'{lines[0]} {lines[-1]}'
    sys.exit(f'vi_gen: error: {message}')
  except AttributeError as e:
    field = str(e.args[0]).strip('"')
    sys.exit(f'vi_gen: error: unknown config field in an override: {field}')
  except ValueError as e:
    sys.exit(f'vi_gen: error: {e}')


def main(argv) -> None:
  """The entry point `app.run` calls (scripts that register their own
  model hand over to it too): a user's error becomes one line, exit 1."""
  try:
    _run(argv)
  except errors.VIGenError as e:
    # The user's input needs changing: say what, without a traceback.
    sys.exit(f'vi_gen: error: {e}')
  except KeyboardInterrupt:
    # The second Ctrl-C (the first asks for a save at the next step).
    sys.exit(
      'vi_gen: stopped at once by a second Ctrl-C, without saving; the same'
      ' command resumes from the last checkpoint, if one was written.'
    )
  except OSError as e:
    if not checkpoint.is_disk_full(e):
      raise
    # A picture, an event file or eval JSON found the disk full.
    sys.exit(f'vi_gen: error: Disk full: {e}. Free some space and resume.')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
