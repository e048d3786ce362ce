"""The XLA compiler options that vi_gen chooses per platform and program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vi_gen import compiler, gmm, layers


def test_convolutional_options_keep_convolutions_out_of_ynnpack():
  """XLA's defaults give a phase layer's four convolutions to YNNPACK (if
  they stop doing so, the options have lost their reason); the options
  keep them with XLA's own kernels."""
  layer = layers.ConvTranspose2x(64, 5)
  x = jnp.ones((2, 7, 7, 64))
  params = layer.init(jax.random.key(0), x)

  def convolutions_in_ynnpack(options) -> int:
    program = jax.jit(layer.apply, compiler_options=options).lower(params, x)
    return sum(
      '__ynn_fusion' in line and 'conv_general_dilated' in line
      for line in program.compile().as_text().splitlines()
    )

  assert convolutions_in_ynnpack(None) == 4
  assert convolutions_in_ynnpack(compiler.options(compiler.CONVOLUTIONAL)) == 0


def _in_ynnpack(program, op: str) -> int:
  """How many YNNPACK fusions of the compiled `program` are `op`s."""
  return sum(
    '__ynn_fusion' in line and op in line
    for line in program.compile().as_text().splitlines()
  )


def test_gmm_fit_keeps_its_reductions_out_of_ynnpack_and_its_dots_in():
  """`gmm.fit` compiles with the `MIXTURE` options: no reduction in a
  YNNPACK fusion, where XLA's defaults put some of the same program's; its
  dots stay (outside YNNPACK a float32 fit ended in NaN, compiler.py)."""
  # 2048 points: with fewer, XLA's defaults keep every reduction too.
  x = np.random.default_rng(0).normal(size=(2048, 2))
  x = jnp.asarray(x, jnp.float32)
  init = gmm.init_from_data(jax.random.key(0), x, 4)
  defaults = jax.jit(gmm.fit.__wrapped__, static_argnames='num_iters')
  assert _in_ynnpack(defaults.lower(x, init, 3), 'reduce') > 0
  program = gmm.fit.lower(x, init, 3)
  assert _in_ynnpack(program, 'reduce') == 0
  assert _in_ynnpack(program, 'dot_general') > 0


@pytest.mark.parametrize('platform', ['gpu', 'tpu'])
def test_other_platforms_get_xla_defaults(platform):
  assert compiler.options(compiler.CONVOLUTIONAL, platform) is None
  assert compiler.options(compiler.MIXTURE, platform) is None


def test_no_choice_is_xla_defaults():
  """A method without `cpu_library_fusions` (None) compiles as XLA would."""
  assert compiler.options(None, 'cpu') is None


def test_an_unknown_option_value_falls_back_to_xla_defaults(monkeypatch):
  """A later jaxlib that renames the experimental option costs speed, not
  the run: one warning, and XLA's defaults."""
  warnings = []
  monkeypatch.setattr(
    compiler.logging, 'warning', lambda *args: warnings.append(args)
  )
  fusions = ('LIBRARY_FUSION_TYPE_NO_SUCH_TYPE',)
  try:
    assert compiler.options(fusions, 'cpu') is None
    assert compiler.options(fusions, 'cpu') is None
  finally:
    compiler._accepted.cache_clear()
  assert len(warnings) == 1
  assert 'NO_SUCH_TYPE' in str(warnings[0])
