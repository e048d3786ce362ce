"""Every eval config that passes validation evaluates: a rule a later stage
needs is checked before anything is written (issue 13, item 2).

Walks each eval count to its boundaries (1, and around the counts it must
fit: a KID subset as large as the sample sets and one more, one IS split per
sample and one more, a batch that divides nothing, an IWAE chunk that does
not divide K) for every model on its `test` preset and the 2-D `toy` one,
and requires of each config: rejected by `validation.check_config` with a
message that names an eval field, or evaluated without an error.
"""

import math

import jax
import pytest

from configs import aae, ali, em, gan, vae
from vi_gen import data, errors, methods, validation
from vi_gen.evaluation import run

CONFIGS = {'gan': gan, 'vae': vae, 'aae': aae, 'ali': ali, 'em': em}
# Small counts, so that each evaluation takes seconds; 4 samples (and 4 real
# examples) let every boundary below sit inside them.
SMALL = {
  'num_samples': 4,
  'num_reference': 4,
  'kid_subsets': 2,
  'kid_subset_size': 2,
  'is_splits': 2,
  'num_mode_samples': 4,
  'num_heldout': 4,
  'iwae_samples': 4,
  'iwae_chunk': 2,
  'batch_size': 4,
}
BOUNDARIES = [
  {name: 1 for name in SMALL},  # Every count at its minimum.
  {'kid_subset_size': 4},  # As large as the sample sets.
  {'kid_subset_size': 5},  # One more than them.
  {'num_samples': 5, 'kid_subset_size': 5},  # More than the real examples.
  {'is_splits': 4},  # One sample per split.
  {'is_splits': 5},  # A split without a sample.
  {'batch_size': 3},  # Divides no count.
  {'iwae_samples': 3},  # Not a multiple of the chunk.
  {'iwae_samples': 2, 'iwae_chunk': 4},  # A chunk larger than K.
  {'num_heldout': 3, 'batch_size': 2},
]


# Random networks give degenerate samples, whose features' covariance is.
@pytest.mark.filterwarnings('ignore:Matrix is singular')
@pytest.mark.slow
@pytest.mark.parametrize('preset', ['test', 'toy'])
@pytest.mark.parametrize('model', sorted(CONFIGS))
def test_accepted_eval_configs_evaluate(model, preset, tmp_path):
  """One model (and its initial state) per preset, every boundary."""
  config = CONFIGS[model].get_config(preset)
  method = methods.get(model)(config, data.example_shape(config.data))
  state = method.init(jax.random.key(0))
  for boundary in BOUNDARIES:
    config.eval.update({**SMALL, **boundary})
    try:
      validation.check_config(config)
    except errors.ConfigError as e:
      assert 'eval.' in str(e), (boundary, e)
      continue
    evaluator = run.Evaluator(config, str(tmp_path), method)
    metrics = evaluator(state, step=0)['metrics']
    assert metrics, boundary
    values = [v for v in metrics.values() if isinstance(v, float)]
    assert not any(math.isinf(v) for v in values), (boundary, metrics)
