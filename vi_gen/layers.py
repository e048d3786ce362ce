"""Stride-2 'SAME' convolution layers that XLA:CPU runs fast.

XLA:CPU executes convolutions with an input (lhs) dilation very slowly: the
transposed convolution of `flax.linen.ConvTranspose` is one, and so is the
input gradient of a strided `flax.linen.Conv`. In a 64x64 DCGAN on CPU they
make one training step take about a minute instead of a few seconds.

The layers here compute the same functions with the same parameters, using
only stride-1 convolutions where the reference dilates its input. The output
of a stride-2 transposed convolution splits into four phases (row parity,
column parity); each phase is a stride-1 convolution of the undilated input
with a sub-kernel made of every other tap of the kernel, and the phases
interleave back into the 2x output. Where the transposed convolution has
few output channels (an image layer: 1 or 3), a convolution with so few
outputs keeps XLA:CPU's kernels idle, and the layer is instead one matrix
product of every input pixel with the whole kernel followed by the sum of
the shifted products ("col2im", as Caffe and PyTorch compute transposed
convolutions). `ConvTranspose2x` uses this in its forward pass (autodiff of
it has no dilations either); `Conv2x` keeps the usual strided forward pass
and uses it for its input gradient, a transposed convolution of the output
gradient.

Both layers take NHWC inputs with a single batch axis and, like flax's,
a computation `dtype` (e.g. bfloat16) apart from the `param_dtype` of their
parameters (float32 by default).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype
from jax import lax

Array = jax.Array
Initializer = jax.nn.initializers.Initializer

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
_STRIDES = (2, 2)
# Transposed convolutions with at most this many output channels take the
# col2im form. On the 2-core CPU (`python -m benchmarks.conv_bench`, batch
# 64, forward + backward, `compiler.CONVOLUTIONAL` options, quiet) it took
# 0.50x and 0.68x the phase form's time with 1 and 3 channels (14x14x64 ->
# 28x28x1, 32x32x64 -> 64x64x3) and 1.7-3.9x with 64 to 256 channels,
# where its [N*H*W, k*k*F] products outgrow the caches.
_COL2IM_MAX_FEATURES = 4


def _conv(
  x: Array,
  kernel: Array,
  strides: tuple[int, int],
  padding: str | Sequence[tuple[int, int]],
) -> Array:
  """Cross-correlation of NHWC `x` with an HWIO `kernel`, as flax does it."""
  return lax.conv_general_dilated(
    x, kernel, strides, padding, dimension_numbers=_DIMENSION_NUMBERS
  )


def _phase_taps_and_padding(
  pad_before: int, kernel_size: int, in_size: int, out_size: int
) -> list[tuple[int, tuple[int, int]]]:
  """First taps and paddings of the two phases of one spatial axis.

  The dilated convolution that `_phase_conv` replaces is, along one axis,
  `y[o] = sum_t w[t] d[o + t - a]`, where `d` is the input `x` with a zero
  between neighbours (`d[2i] = x[i]`) and `a = pad_before`. Only the taps with
  `o + t - a` even read data: for `o = 2q + r` these are `t = t0 + 2m` with
  `t0 = (a - r) mod 2`, and they read `x[q + m - lo]` with
  `lo = (a - r - t0) / 2`. Phase `r` of `y` is therefore the stride-1
  correlation of `x`, padded by `lo` before, with `w[t0::2]`; the padding after
  is chosen so that both phases have `ceil(out_size / 2)` outputs. Zero
  padding stands in for the reads outside `x`, which are zeros of `d`.

  Args:
    pad_before: Padding `a` of the dilated input before its first element.
    kernel_size: Number of kernel taps along the axis.
    in_size: Length of the undilated input along the axis.
    out_size: Length of the output along the axis.

  Returns:
    For phase 0 and phase 1, the first tap `t0` and the (before, after)
    padding of the stride-1 convolution.
  """
  phase_size = -(-out_size // 2)
  phases = []
  for r in (0, 1):
    t0 = (pad_before - r) % 2
    num_taps = len(range(t0, kernel_size, 2))
    lo = (pad_before - r - t0) // 2
    hi = phase_size - in_size + num_taps - 1 - lo
    phases.append((t0, (lo, hi)))
  return phases


def _phase_conv(
  x: Array,
  kernel: Array,
  pad_before: tuple[int, int],
  out_size: tuple[int, int],
) -> Array:
  """Stride-2 transposed convolution as four stride-1 convolutions.

  Computes `lax.conv_general_dilated(x, kernel, (1, 1), padding,
  lhs_dilation=(2, 2))` with `pad_before` as the padding before each spatial
  axis of the dilated input and the padding after chosen to give `out_size`.

  Args:
    x: NHWC input.
    kernel: HWIO kernel with at least two taps along each spatial axis.
    pad_before: Padding of the dilated input before rows and before columns.
    out_size: Output height and width.

  Returns:
    The NHWC output, of spatial size `out_size`.
  """
  row_phases = _phase_taps_and_padding(
    pad_before[0], kernel.shape[0], x.shape[1], out_size[0]
  )
  col_phases = _phase_taps_and_padding(
    pad_before[1], kernel.shape[1], x.shape[2], out_size[1]
  )
  return _interleave(
    [
      [
        _conv(x, kernel[tr::2, tc::2], (1, 1), (pad_r, pad_c))
        for tc, pad_c in col_phases
      ]
      for tr, pad_r in row_phases
    ],
    out_size,
  )


def _interleave(phases: list[list[Array]], out_size: tuple[int, int]) -> Array:
  """The output whose pixel (2q + r, 2p + c) is `phases[r][c][:, q, p]`,
  cropped to `out_size`."""
  y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)
  n, h, _, w, _, c = y.shape  # [N, H', 2, W', 2, C]
  y = y.reshape(n, 2 * h, 2 * w, c)
  return y[:, : out_size[0], : out_size[1]]


def _col2im_conv(
  x: Array,
  kernel: Array,
  pad_before: tuple[int, int],
  out_size: tuple[int, int],
) -> Array:
  """`_phase_conv` as one matrix product and shifted sums.

  Every input pixel times every tap, `cols[n, i, j, s, t] = x[n, i, j] @
  kernel[s, t]`, is one [N*H*W, C] @ [C, k*k*F] product. Input pixel `i`
  with tap `s` lands on output `2i + a - s` (`a` = `pad_before`), so
  output phase `r` sums, over the taps `s` with `a - s - r` even, the
  products shifted by `(a - s - r) / 2` pixels: zero padding (negative
  where it crops) does the shift.

  Args:
    x: NHWC input.
    kernel: HWIO kernel.
    pad_before: Padding of the dilated input before rows and before columns.
    out_size: Output height and width.

  Returns:
    The NHWC output, of spatial size `out_size`; equal to `_phase_conv`'s.
  """
  n, h, w, c = x.shape
  kh, kw, _, f = kernel.shape
  taps = kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * f)
  cols = (x.reshape(n * h * w, c) @ taps).reshape(n, h, w, kh, kw, f)
  phase_size = (-(-out_size[0] // 2), -(-out_size[1] // 2))
  zero = jnp.zeros((), cols.dtype)

  def phase(row: int, col: int) -> Array:
    total = 0
    for s in range((pad_before[0] - row) % 2, kh, 2):
      down = (pad_before[0] - s - row) // 2
      for t in range((pad_before[1] - col) % 2, kw, 2):
        right = (pad_before[1] - t - col) // 2
        total += lax.pad(
          cols[:, :, :, s, t],
          zero,
          (
            (0, 0, 0),
            (down, phase_size[0] - h - down, 0),
            (right, phase_size[1] - w - right, 0),
            (0, 0, 0),
          ),
        )
    return total

  return _interleave(
    [[phase(row, col) for col in (0, 1)] for row in (0, 1)], out_size
  )


def _transposed_conv(
  x: Array,
  kernel: Array,
  pad_before: tuple[int, int],
  out_size: tuple[int, int],
) -> Array:
  """`_phase_conv`, or `_col2im_conv` for few output channels."""
  if kernel.shape[-1] <= _COL2IM_MAX_FEATURES:
    return _col2im_conv(x, kernel, pad_before, out_size)
  return _phase_conv(x, kernel, pad_before, out_size)


@jax.custom_vjp
def _strided_conv(x: Array, kernel: Array) -> Array:
  """Stride-2 'SAME' convolution whose input gradient avoids dilations."""
  return _conv(x, kernel, _STRIDES, 'SAME')


def _strided_conv_fwd(
  x: Array, kernel: Array
) -> tuple[Array, tuple[Array, Array]]:
  return _strided_conv(x, kernel), (x, kernel)


def _strided_conv_bwd(
  residuals: tuple[Array, Array], g: Array
) -> tuple[Array, Array]:
  """Input gradient in phase form, kernel gradient by autodiff.

  The forward pass reads `x[2o + t - lo]` with tap `t` of the kernel, where
  `lo` is the 'SAME' padding before. Its transpose is the stride-2 transposed
  convolution of `g` with the spatially flipped, in/out-swapped kernel and
  `k - 1 - lo` padding before the dilated `g`.
  """
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  in_size = x.shape[1:3]
  (top, _), (left, _) = lax.padtype_to_pads(in_size, (kh, kw), _STRIDES, 'SAME')
  flipped = kernel[::-1, ::-1].swapaxes(2, 3)
  grad_x = _transposed_conv(g, flipped, (kh - 1 - top, kw - 1 - left), in_size)
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, _STRIDES, 'SAME'), kernel)
  (grad_kernel,) = kernel_vjp(g)
  return grad_x, grad_kernel


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def _check_kernel_size(kernel_size: int) -> None:
  if kernel_size < 2:
    raise ValueError(f'kernel_size must be at least 2, got {kernel_size}.')


class _Stride2(nn.Module):
  """The fields and parameters of flax's conv layers, shared by the two
  fast layers so that their checkpoints are interchangeable with flax's.

  Attributes:
    features: Number of output channels.
    kernel_size: Height and width of the kernel, at least 2.
    use_bias: Whether to add a bias.
    kernel_init: Initializer of the kernel.
    bias_init: Initializer of the bias.
    dtype: Dtype of the computation and the output (None: promoted from the
      input and the parameters, as flax does).
    param_dtype: Dtype of the parameters.
  """

  features: int
  kernel_size: int = 5
  use_bias: bool = True
  kernel_init: Initializer = nn.linear.default_kernel_init
  bias_init: Initializer = nn.initializers.zeros_init()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _params(self, x: Array) -> tuple[Array, Array, Array | None]:
    """(x, kernel, bias or None), cast to the computation dtype."""
    k = self.kernel_size
    _check_kernel_size(k)
    kernel = self.param(
      'kernel',
      self.kernel_init,
      (k, k, x.shape[-1], self.features),
      self.param_dtype,
    )
    bias = (
      self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    return promote_dtype(x, kernel, bias, dtype=self.dtype)


class ConvTranspose2x(_Stride2):
  """`nn.ConvTranspose(features, (k, k), strides=(2, 2), padding='SAME')`.

  Same output (an NHWC input of size H x W gives 2H x 2W), same parameters
  (`kernel` [k, k, in, features], `bias` [features]) and same initialisation
  as the flax layer with its default `transpose_kernel=False`, but computed
  as four stride-1 convolutions whose outputs are interleaved (or, for at
  most 4 features, as one matrix product and shifted sums), which XLA:CPU
  runs many times faster, forward and backward.
  """

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Upsamples NHWC `x` [N, H, W, C] to [N, 2H, 2W, F], F = `features`."""
    x, kernel, bias = self._params(x)
    # lax.conv_transpose pads the dilated input by ceil(k / 2) before for
    # 'SAME' with stride 2 (and k > 1); the output size fixes the rest.
    pad_before = -(-self.kernel_size // 2)
    y = _transposed_conv(
      x, kernel, (pad_before, pad_before), (2 * x.shape[1], 2 * x.shape[2])
    )
    return y if bias is None else y + bias


class Conv2x(_Stride2):
  """`nn.Conv(features, (k, k), strides=(2, 2), padding='SAME')`.

  Same output (an NHWC input of size H x W gives ceil(H/2) x ceil(W/2)),
  same parameters (`kernel` [k, k, in, features], `bias` [features]) and same
  initialisation as the flax layer. The forward pass and the kernel gradient
  are the usual ones; the input gradient, which autodiff would compute as a
  dilated convolution that XLA:CPU runs very slowly, is computed by a custom
  VJP as four stride-1 convolutions whose outputs are interleaved (or, for
  at most 4 input channels, as one matrix product and shifted sums). Reverse
  mode only: `jax.jvp` through this layer is not supported.
  """

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Downsamples NHWC `x` [N, H, W, C] to [N, ceil(H/2), ceil(W/2), F]."""
    x, kernel, bias = self._params(x)
    y = _strided_conv(x, kernel)
    return y if bias is None else y + bias
