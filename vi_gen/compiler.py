"""XLA compiler options, chosen by measurement per platform and per program.

XLA:CPU (jaxlib 0.10) hands every convolution, dot and reduction to the
YNNPACK library by default. On the 2-core CPU of this project's machines
(`docs/performance.md`) that is slow for two of our programs:

* the DCGAN iteration: YNNPACK ran the phase layers' stride-1 convolutions
  (batch 64, 7x7 maps, 64 channels) on one core, at 190 GFLOP/s, where
  XLA's own convolutions use both. Convolutions kept out of YNNPACK made the
  GAN iteration 1.37x faster at MNIST size (102 -> 74 ms) and 1.24x at
  CelebA size (1364 -> 1102 ms); dots and reductions are best left in it
  (without them, 84 ms at MNIST size): `CONVOLUTIONAL`.
* EM for a Gaussian mixture (`vi_gen.gmm.fit`, 100 iterations, K = 10, full
  covariances, float32): with its reductions over the points outside
  YNNPACK, 100k x 2-D points took 0.67 s instead of 1.31 s (quiet, in the
  run of docs/performance.md). Its dots stay in YNNPACK: outside it as
  well, the float32 fit of the benchmark's 50k x 16-D data ended in NaN at
  iteration 9, where one component had collapsed onto about 10 points
  (covariance condition number 4.8e7, beyond float32's 1/eps = 1.7e7) and
  YNNPACK's dots happened to round it to a positive definite matrix, as
  XLA's defaults do: `MIXTURE`.

On other platforms the options are None: XLA's defaults.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from absl import logging

# The YNNPACK fusion kinds (XLA's `LibraryFusionType` names) each program
# keeps on CPU.
CONVOLUTIONAL = (
  'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',
  'LIBRARY_FUSION_TYPE_REDUCE',
)
MIXTURE = ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',)
_CPU_OPTION = 'xla_cpu_experimental_ynn_fusion_type'


@functools.cache
def _accepted(value: str) -> bool:
  """Whether this XLA:CPU knows `value` of the (experimental, so possibly
  renamed by a later jaxlib) option; if not, logs that it keeps its
  defaults."""
  try:
    jax.jit(jnp.negative, compiler_options={_CPU_OPTION: value}).lower(
      jnp.zeros(())
    ).compile()
  except jax.errors.JaxRuntimeError as error:
    logging.warning(
      'XLA:CPU refused %s=%r (%s); compiling with its defaults, which ran'
      ' the GAN iteration up to 1.4x slower and EM up to 2x.',
      _CPU_OPTION,
      value,
      error,
    )
    return False
  return True


def options(
  library_fusions: Sequence[str] | None, platform: str | None = None
) -> dict[str, str] | None:
  """Options for `jax.jit(..., compiler_options=...)` on `platform`
  (default: JAX's default backend).

  Args:
    library_fusions: The YNNPACK fusion kinds to keep on CPU, e.g.
      `CONVOLUTIONAL` or `MIXTURE`; None for XLA's defaults.
    platform: 'cpu', 'gpu' or 'tpu'.

  Returns:
    The options on CPU, None elsewhere or where XLA refuses them.
  """
  if library_fusions is None:
    return None
  if (platform or jax.default_backend()) != 'cpu':
    return None
  value = ','.join(library_fusions)
  return {_CPU_OPTION: value} if _accepted(value) else None


class _PlatformJit:
  """`jax.jit(fun, **jit_kwargs)` compiled with `options(library_fusions)`,
  made at the first use (importing a module must not start JAX's
  backends); every attribute of the jitted function (`lower`, ...) is
  forwarded to it."""

  def __init__(
    self,
    fun: Callable,
    library_fusions: Sequence[str] | None,
    jit_kwargs: dict,
  ):
    functools.update_wrapper(self, fun)  # Sets __wrapped__ = fun.
    self._library_fusions, self._jit_kwargs = library_fusions, jit_kwargs

  @functools.cached_property
  def _jitted(self) -> Callable:
    return jax.jit(
      self.__wrapped__,
      compiler_options=options(self._library_fusions),
      **self._jit_kwargs,
    )

  def __call__(self, *args, **kwargs):
    return self._jitted(*args, **kwargs)

  def __getattr__(self, name: str):
    # Only what the instance lacks; never dunders (copy and pickle probe
    # them on an instance whose __init__ has not run), nor `_jitted` (an
    # AttributeError while building it would come back here).
    if (
      name.startswith('__')
      or name == '_jitted'
      or '__wrapped__' not in self.__dict__
    ):
      raise AttributeError(name)
    return getattr(self._jitted, name)


def jit(
  fun: Callable, library_fusions: Sequence[str] | None, **jit_kwargs
) -> Callable:
  """`jax.jit(fun, **jit_kwargs)` with the compiler options that
  `library_fusions` asks for on JAX's default backend, read at the first
  use."""
  return _PlatformJit(fun, library_fusions, jit_kwargs)
