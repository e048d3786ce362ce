"""Issue 14's benchmark: iterations, EM and a PyTorch twin, in one run.

Why one run: this project's CPU machine is shared, so numbers taken at
different times are not comparable. Every variant below is timed in rounds
(each round runs every variant once, in a rotated order), so that background
load hits them alike; tables give the minimum (the least disturbed run) and
the median.

Reported, as Markdown tables (`docs/performance.md` copies them):

* matmul: a large float32 `jnp.dot` (and bfloat16 on GPUs), GFLOP/s; the
  peak that the iterations are measured against.
* iterations: GAN, VAE, AAE and ALI at the `mnist` and `celeba` sizes (the
  reference 64x64 networks), each method's `iteration` jitted and donated as
  train.py does, on random batches: ms (min / median), images/s (real
  examples per iteration / median), GFLOP per iteration (XLA's
  `cost_analysis`) and % of the matmul peak (both at their minimum).
* torch (`--torch`): a PyTorch twin of the GAN iteration (same DCGAN
  networks and widths, 1 D step, the G^o forward, 2 G steps of eq. (26),
  Adam(2e-4, 0.5)) in NCHW and channels_last (and bfloat16 autocast on
  CUDA), and the ratio PyTorch ms / vi_gen ms.
* EM: `vi_gen.gmm.fit` (K=10, full covariance, 100 iterations) in float32
  and float64 against scikit-learn's GaussianMixture (its default threads
  and one thread via threadpoolctl) from the same start, reg_covar matched,
  tol=0 so that it runs all 100 iterations: seconds and the final mean
  log-likelihood, all evaluated in float64.

It needs JAX, Flax and Optax (plus scikit-learn and threadpoolctl for EM,
PyTorch for --torch: `pip install -e '.[bench]'`), not TensorFlow, clu or
ml_collections: without ml_collections the presets are rebuilt here
(`fallback_config`), and where configs/ imports, the two are compared and
every difference is printed.

Usage, from the repository root:
  python -m benchmarks.performance [--quick] [--torch]
      [--batch_sizes 64,256,512] [--models gan,vae] [--presets mnist]
      [--rounds N] [--burst N] [--skip_em] [--compute_dtype bfloat16]
"""

import os

# Before NumPy, PyTorch or scikit-learn load an OpenMP runtime: idle OpenMP
# threads sleep instead of spinning on the cores that XLA needs next.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vi_gen import compiler, gmm, methods, testing  # noqa: E402

MODELS = ('gan', 'vae', 'aae', 'ali')
PRESETS = ('mnist', 'celeba')
EXAMPLE_SHAPES = {'mnist': (28, 28, 1), 'celeba': (64, 64, 3)}
# Issue 14's goals.
GOAL_MNIST = 1.25  # PyTorch ms / vi_gen ms, mnist GAN iteration.
GOAL_CELEBA = 1.0
GOAL_EM_FLOAT32 = 5.0  # Best scikit-learn s / vi_gen s.
GOAL_EM_FLOAT64 = GOAL_EM_FLOAT32 / 2
EM_COMPONENTS = 10
EM_ITERATIONS = 100
EM_RIDGE = gmm.DEFAULT_RIDGE  # scikit-learn's reg_covar default, too.


# ------------------------------------------------------------- configs ---


class AttrDict(dict):
  """A dict with attribute access: the part of ml_collections.ConfigDict
  that the method classes use, for machines without ml_collections."""

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None

  def __setattr__(self, name: str, value: Any) -> None:
    self[name] = value


def _attr(tree: dict) -> AttrDict:
  return AttrDict(
    {k: _attr(v) if isinstance(v, dict) else v for k, v in tree.items()}
  )


# configs/common.py's READER_WIDTHS and GENERATOR_WIDTHS.
_READER = {'mnist': (64, 128), 'celeba': (64, 128, 256, 512)}
_GENERATOR = {'mnist': (128, 64), 'celeba': (512, 256, 128, 64)}


def fallback_config(model: str, preset: str) -> AttrDict:
  """configs/<model>.py:<preset>, the fields a method reads, without
  ml_collections (compared with configs/ by `config_differences`)."""
  mnist = preset == 'mnist'
  data = {
    'name': 'mnist' if mnist else 'celeb_a',
    'source': 'bundled' if mnist else 'tfds',
    'split': 'train',
    'image_size': 28 if mnist else 64,
    'crop_size': 108,
    'resize': 'bicubic_tf1',
    'shuffle_buffer': 10_000,
  }
  config = {
    'model': model,
    'preset': preset,
    'seed': 0,
    'batch_size': 64,
    'latent_dim': 100,
    'ema_decay': 0.0,
    'run': {'conv_lowering': 'auto', 'num_grid_samples': 64},
    'data': data,
    'optim': {'lr': 2e-4, 'b1': 0.5, 'b2': 0.999, 'eps': 1e-8},
    'network': {
      'g_widths': _GENERATOR[preset],
      'kernel_size': 5,
      'batch_norm': True,
      'hidden_bias': True,
      'compute_dtype': 'float32',
    },
  }
  network = config['network']
  if model == 'gan':
    network['d_widths'] = _READER[preset]
    config.update(
      reg_weight=5.0,
      d_steps=1,
      g_steps=2,
      old_generator='phase',
      g_batches=1,
      generator_loss='nonsaturating',
    )
    return _attr(config)
  network['e_widths'] = _READER[preset]
  if mnist:
    config['latent_dim'] = 16
  if model == 'vae':
    config['optim'].update(lr=1e-3, b1=0.9)
    config['vae'] = {
      'likelihood': 'bernoulli' if mnist else 'gaussian',
      'learn_variance': not mnist,
      'recon_logvar': 0.0,
    }
  elif model == 'aae':
    config['aae'] = {'mode': 'joint', 'recon_weight': 10.0}
    network['d_widths'] = (256, 256) if mnist else (512, 512)
  elif model == 'ali':
    config.update(d_steps=1, g_steps=1, old_generator='phase')
    config['ali'] = {
      'variant': 'vi',
      'complete': False,
      'encoder_sigma': 0.0,
      'generator_sigma': 0.0,
    }
    network['d_widths'] = _READER[preset]
    network['d_z_widths'] = (256,) if mnist else (512,)
    network['d_joint_widths'] = (512,) if mnist else (1024,)
  else:
    raise ValueError(f'Unknown model {model!r}; known: {MODELS}.')
  return _attr(config)


def _flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def repository_config(model: str, preset: str):
  """configs/<model>.py:<preset>, or None where configs/ does not import
  (no ml_collections)."""
  try:
    module = importlib.import_module(f'configs.{model}')
  except ImportError:
    return None
  return module.get_config(preset)


def config_differences(model: str, preset: str) -> list[str] | None:
  """How `fallback_config` differs from configs/ on the fields a method
  reads (None: configs/ does not import here)."""
  real = repository_config(model, preset)
  if real is None:
    return None
  ours = _flatten(fallback_config(model, preset))
  theirs = _flatten(real.to_dict())
  ignored = ('eval.', 'debug.', 'run.')
  diffs = [
    f'{k}: configs/ {theirs.get(k, "<absent>")!r}, here {v!r}'
    for k, v in ours.items()
    if theirs.get(k, object()) != v
  ]
  diffs += [
    f'{k}: configs/ {v!r}, absent here'
    for k, v in theirs.items()
    if k not in ours and not k.startswith(ignored)
  ]
  return diffs


def preset_config(model: str, preset: str, compute_dtype: str):
  """The preset's config: configs/ where it imports, else the fallback."""
  config = repository_config(model, preset)
  if config is None:
    config = fallback_config(model, preset)
  config.network.compute_dtype = compute_dtype
  return config


# -------------------------------------------------------------- timing ---


@dataclasses.dataclass
class Variant:
  """One thing timed: `run()` does `burst` iterations and waits for them;
  each round calls it `per_round` times."""

  name: str
  run: Callable[[], None]
  burst: int = 1
  per_round: int = 1
  times: list[float] = dataclasses.field(default_factory=list)

  @property
  def best(self) -> float:
    """Seconds per iteration of the least disturbed sample."""
    return min(self.times)

  @property
  def median(self) -> float:
    """Median seconds per iteration."""
    return statistics.median(self.times)


def alternate(variants: Sequence[Variant], rounds: int) -> None:
  """Times every variant `rounds` times, one after another within a round
  and in a rotated order from round to round, so that background load and
  order effects are spread over all of them."""
  for r in range(rounds):
    order = list(variants[r % len(variants) :]) + list(
      variants[: r % len(variants)]
    )
    for variant in order:
      for _ in range(variant.per_round):
        start = time.perf_counter()
        variant.run()
        variant.times.append((time.perf_counter() - start) / variant.burst)
    print(f'  round {r + 1}/{rounds} done', file=sys.stderr, flush=True)


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def matmul_variant(n: int, dtype, burst: int) -> tuple[Variant, float]:
  """A jitted n x n @ n x n dot; returns the variant and its FLOPs."""
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (n, n), dtype)
  b = jax.random.normal(key_b, (n, n), dtype)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))

  def run():
    out = None
    for _ in range(burst):
      out = dot(a, b)
    jax.block_until_ready(out)

  name = f'dot {n}x{n} {jnp.dtype(dtype).name}'
  return Variant(name, run, burst=burst, per_round=3), 2.0 * n**3


@dataclasses.dataclass
class Iteration:
  """A method's jitted iteration on a random batch."""

  model: str
  preset: str
  batch_size: int
  images: int  # Real examples per iteration.
  flops: float | None
  compile_s: float
  variant: Variant
  xla_defaults: bool = False  # Compiled without vi_gen's compiler options.

  @property
  def label(self) -> str:
    return f'{self.model} (XLA defaults)' if self.xla_defaults else self.model


def iteration_variant(
  model: str,
  preset: str,
  batch_size: int,
  compute_dtype: str,
  burst: int,
  xla_defaults: bool = False,
) -> Iteration:
  """`methods.get(model)(config, shape).iteration`, jitted and donated as
  train.py does (with the method's `compiler.options`, unless
  `xla_defaults`), compiled ahead of time (for its FLOPs) and run once."""
  config = preset_config(model, preset, compute_dtype)
  config.batch_size = batch_size
  shape = EXAMPLE_SHAPES[preset]
  method = methods.get(model)(config, shape)
  state = jax.jit(method.init)(jax.random.key(0))
  rng = np.random.default_rng(0)
  k = method.batches_per_iteration
  batch = jnp.asarray(rng.uniform(-1, 1, (k, batch_size, *shape)), jnp.float32)
  key = jax.random.key(1)
  start = time.perf_counter()
  fusions = None if xla_defaults else method.cpu_library_fusions
  compiled = (
    compiler.jit(method.iteration, fusions, donate_argnums=0)
    .lower(state, batch, key)
    .compile()
  )
  compile_s = time.perf_counter() - start
  holder = [state]

  def run():
    out = None
    for _ in range(burst):
      holder[0], out = compiled(holder[0], batch, key)
    jax.block_until_ready((holder[0], out))

  run()  # The first run allocates; not timed.
  name = f'vi_gen {model} {preset} b{batch_size}'
  if xla_defaults:
    name += ' (XLA defaults)'
  per_round = max(1, 4 // burst) if preset == 'mnist' else 1
  return Iteration(
    model,
    preset,
    batch_size,
    k * batch_size,
    _flops(compiled),
    compile_s,
    Variant(name, run, burst=burst, per_round=per_round),
    xla_defaults,
  )


# ------------------------------------------------------- PyTorch twin ---


def torch_gan_variant(
  preset: str,
  batch_size: int,
  layout: str,
  device: str,
  burst: int,
) -> Variant:
  """The GAN iteration of configs/gan.py:<preset> in eager PyTorch.

  The same DCGAN (networks.py: 5x5 stride-2 'SAME' (transposed)
  convolutions, BatchNorm momentum 0.9 / eps 1e-5 on every G layer and on
  every D layer but the first, ReLU / LeakyReLU(0.2), tanh, no bias before
  BatchNorm) and the same schedule: 1 D step on a real batch and G(z), the
  G^o forward, 2 G steps of eq. (26) (weight 5) on one z; Adam(2e-4, 0.5).
  `layout`: 'nchw', 'channels_last' or 'bf16' (autocast + channels_last).
  """
  import torch
  from torch import nn
  from torch.nn import functional

  config = preset_config('gan', preset, 'float32')
  g_widths = tuple(config.network.g_widths)
  d_widths = tuple(config.network.d_widths)
  kernel, latent = config.network.kernel_size, config.latent_dim
  height, _, channels = EXAMPLE_SHAPES[preset]
  base = height // 2 ** len(g_widths)
  memory = torch.channels_last if layout != 'nchw' else torch.contiguous_format
  pad = kernel // 2

  def up(cin: int, cout: int, bias: bool) -> nn.Module:
    # Stride-2 'SAME' transposed conv: H -> 2H.
    return nn.ConvTranspose2d(cin, cout, kernel, 2, pad, 1, bias=bias)

  class Generator(nn.Module):
    def __init__(self):
      super().__init__()
      self.dense = nn.Linear(latent, g_widths[0] * base * base, bias=False)
      layers = [nn.BatchNorm2d(g_widths[0], eps=1e-5, momentum=0.1), nn.ReLU()]
      for cin, cout in zip(g_widths, g_widths[1:], strict=False):
        layers += [
          up(cin, cout, False),
          nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
          nn.ReLU(),
        ]
      layers += [up(g_widths[-1], channels, True), nn.Tanh()]
      self.body = nn.Sequential(*layers)

    def forward(self, z):
      h = self.dense(z).view(-1, g_widths[0], base, base)
      return self.body(h.contiguous(memory_format=memory))

  class Discriminator(nn.Module):
    def __init__(self):
      super().__init__()
      layers, cin = [], channels
      for i, cout in enumerate(d_widths):
        layers.append(nn.Conv2d(cin, cout, kernel, 2, pad, bias=i == 0))
        if i:
          layers.append(nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))
        layers.append(nn.LeakyReLU(0.2))
        cin = cout
      self.body = nn.Sequential(*layers)
      side = height // 2 ** len(d_widths)
      self.logit = nn.Linear(d_widths[-1] * side * side, 1)

    def forward(self, x):
      return self.logit(self.body(x).flatten(1))[:, 0]

  torch.manual_seed(0)
  generator = Generator().to(device, memory_format=memory)
  discriminator = Discriminator().to(device, memory_format=memory)
  for module in (*generator.modules(), *discriminator.modules()):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      nn.init.normal_(module.weight, std=0.02)
  adam = {'lr': config.optim.lr, 'betas': (config.optim.b1, config.optim.b2)}
  g_opt = torch.optim.Adam(generator.parameters(), **adam)
  d_opt = torch.optim.Adam(discriminator.parameters(), **adam)
  real = torch.rand(batch_size, channels, height, height, device=device) * 2
  real = (real - 1).contiguous(memory_format=memory)
  autocast = (
    torch.autocast('cuda', dtype=torch.bfloat16)
    if layout == 'bf16'
    else torch.autocast(device, enabled=False)
  )
  sync = torch.cuda.synchronize if device == 'cuda' else lambda: None

  def iteration():
    z = torch.randn(batch_size, latent, device=device)
    with torch.no_grad(), autocast:
      fake = generator(z)
    d_opt.zero_grad(set_to_none=True)
    with autocast:
      real_logits = discriminator(real).float()
      fake_logits = discriminator(fake).float()
    d_loss = functional.softplus(-real_logits).mean()
    d_loss = d_loss + functional.softplus(fake_logits).mean()
    d_loss.backward()
    d_opt.step()
    z = torch.randn(batch_size, latent, device=device)
    with torch.no_grad(), autocast:
      old_fake = generator(z).float()  # G^o(z): the phase's start.
    discriminator.requires_grad_(False)
    for _ in range(config.g_steps):
      g_opt.zero_grad(set_to_none=True)
      with autocast:
        fake = generator(z)
        logits = discriminator(fake).float()
      regularizer = (fake.float() - old_fake).square().mean()
      g_loss = functional.softplus(-logits).mean()
      (g_loss + config.reg_weight * regularizer).backward()
      g_opt.step()
    discriminator.requires_grad_(True)

  def run():
    for _ in range(burst):
      iteration()
    sync()

  run()  # Warm-up (oneDNN primitives, cuDNN autotuning).
  run()
  per_round = max(1, 4 // burst) if preset == 'mnist' else 1
  name = f'torch {layout} {preset} b{batch_size}'
  return Variant(name, run, burst=burst, per_round=per_round)


# ------------------------------------------------------------------ EM ---


def em_data(n: int, d: int, seed: int) -> np.ndarray:
  """n points from 10 random full-covariance Gaussians in d dimensions."""
  rng = np.random.default_rng(seed)
  means = rng.normal(0, 4, (EM_COMPONENTS, d))
  scales = rng.normal(0, 0.5, (EM_COMPONENTS, d, d)) + np.eye(d)
  labels = rng.integers(EM_COMPONENTS, size=n)
  noise = rng.normal(size=(n, d))
  return means[labels] + np.einsum('nij,nj->ni', scales[labels], noise)


@dataclasses.dataclass
class EMRun:
  """One EM implementation on one data set, and its final parameters."""

  data: str
  name: str
  variant: Variant
  final: list = dataclasses.field(default_factory=list)  # [(w, mu, cov)]


def em_variants(x: np.ndarray, label: str, seed: int) -> list[EMRun]:
  """vi_gen float32 / float64 (and float32 with XLA's default compiler
  options, on CPU) and scikit-learn default / 1 thread, all from one
  k-means++ start (`gmm.init_from_data`, float64)."""
  import threadpoolctl

  with jax.enable_x64(True):
    x64 = jnp.asarray(x, jnp.float64)
    init = gmm.init_from_data(
      jax.random.key(seed), x64, EM_COMPONENTS, 'full', EM_RIDGE
    )
    init = gmm.GMMParams(*(np.asarray(a) for a in init))
  runs = []
  implementations = [('float32', gmm.fit, ''), ('float64', gmm.fit, '')]
  if compiler.options(compiler.MIXTURE):
    defaults = jax.jit(gmm.fit.__wrapped__, static_argnames='num_iters')
    implementations.append(('float32', defaults, ' (XLA defaults)'))
  for dtype, fit_fn, suffix in implementations:
    run = EMRun(label, f'vi_gen {dtype}{suffix}', None)

    def fit(dtype=dtype, fit_fn=fit_fn, run=run):
      with jax.enable_x64(dtype == 'float64'):
        xj = jnp.asarray(x, dtype)
        params, curve = fit_fn(xj, init, EM_ITERATIONS, EM_RIDGE)
        jax.block_until_ready((params, curve))
      run.final = [tuple(np.asarray(a, np.float64) for a in params)]

    fit()  # Compiles.
    run.variant = Variant(run.name, fit)
    runs.append(run)
  for threads in (None, 1):
    name = 'sklearn default' if threads is None else 'sklearn 1 thread'
    run = EMRun(label, name, None)

    def fit(threads=threads, run=run):
      mixture = testing.sklearn_mixture(init, EM_ITERATIONS, EM_RIDGE)
      with threadpoolctl.threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "did not converge" (tol=0).
        mixture.fit(x)
      run.final = [(mixture.weights_, mixture.means_, mixture.covariances_)]

    run.variant = Variant(name, fit)
    runs.append(run)
  return runs


def mean_log_likelihood(x: np.ndarray, params: tuple) -> float:
  """E_x log q(x) in float64, the same evaluator for every implementation."""
  with jax.enable_x64(True):
    params = gmm.GMMParams(*(jnp.asarray(a, jnp.float64) for a in params))
    return float(jnp.mean(gmm.log_likelihood(params, jnp.asarray(x))))


# -------------------------------------------------------------- report ---


def _versions(with_torch: bool) -> str:
  import flax
  import jaxlib
  import optax

  parts = [
    f'python {platform.python_version()}',
    f'jax {jax.__version__}',
    f'jaxlib {jaxlib.__version__}',
    f'flax {flax.__version__}',
    f'optax {optax.__version__}',
    f'numpy {np.__version__}',
  ]
  for name in ('sklearn', 'threadpoolctl') + (('torch',) if with_torch else ()):
    with contextlib.suppress(ImportError):
      parts.append(f'{name} {importlib.import_module(name).__version__}')
  return ', '.join(parts)


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def _load() -> str:
  try:
    return ' / '.join(f'{v:.2f}' for v in os.getloadavg())
  except OSError:
    return 'n/a'


def _ms(seconds: float) -> str:
  return f'{seconds * 1e3:.3g}' if seconds < 0.1 else f'{seconds * 1e3:.0f}'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for row in rows:
    print('| ' + ' | '.join(str(c) for c in row) + ' |')
  print()


def _verdict(measured: float, goal: float) -> str:
  if measured >= goal:
    return f'met ({measured:.2f}x >= {goal:g}x)'
  return (
    f'NOT met ({measured:.2f}x, goal {goal:g}x: {goal / measured:.2f}x short)'
  )


# ---------------------------------------------------------------- main ---


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='smoke test')
  parser.add_argument('--torch', action='store_true', help='PyTorch twin')
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--presets', default=','.join(PRESETS))
  parser.add_argument('--batch_sizes', default='64')
  parser.add_argument('--rounds', type=int, help='default 12, --quick 1')
  parser.add_argument(
    '--burst', type=int, help='iterations in flight per sample (CPU 1, GPU 30)'
  )
  parser.add_argument('--em_rounds', type=int, help='default 3, --quick 1')
  parser.add_argument('--skip_em', action='store_true')
  parser.add_argument('--compute_dtype', default='float32')
  parser.add_argument(
    '--torch_threads', type=int, default=os.cpu_count(), help='CPU threads'
  )
  args = parser.parse_args()
  backend = jax.default_backend()
  accelerator = backend != 'cpu'
  rounds = args.rounds or (1 if args.quick else 12)
  em_rounds = args.em_rounds or (1 if args.quick else 3)
  burst = args.burst or (30 if accelerator else 1)
  if args.quick and not args.burst:
    burst = min(burst, 2)
  models = args.models.split(',')
  presets = args.presets.split(',')
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]

  print('# vi_gen performance benchmark\n')
  print(f'command: python -m benchmarks.performance {" ".join(sys.argv[1:])}')
  device = jax.devices()[0]
  print(
    f'machine: {_cpu_model()}, {os.cpu_count()} CPU threads; JAX on'
    f' {jax.device_count()} x {device.platform} ({device.device_kind})'
  )
  print(f'versions: {_versions(args.torch)}')
  print(f'OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}')
  print(
    'vi_gen compiler options: convolutional models'
    f' {compiler.options(compiler.CONVOLUTIONAL)},'
    f' EM {compiler.options(compiler.MIXTURE)}'
  )
  print(f'load average (1/5/15 min) at start: {_load()}')
  print(
    f'timing: {rounds} rounds, variants alternated in a rotated order;'
    f' {burst} iteration(s) in flight per sample; ms per iteration\n'
  )
  for model in models:
    for preset in presets:
      diffs = config_differences(model, preset)
      if diffs is None:
        print(f'configs/ not importable: {model}:{preset} from fallback_config')
      elif diffs:
        print(f'WARNING fallback_config {model}:{preset} differs: {diffs}')

  # --- matmul peak and iterations, alternated -------------------------------
  variants, matmuls = [], []
  n = 8192 if accelerator else (1024 if args.quick else 2048)
  dtypes = (jnp.float32, jnp.bfloat16) if accelerator else (jnp.float32,)
  for dtype in dtypes:
    variant, flops = matmul_variant(n, dtype, burst)
    matmuls.append((variant, flops))
    variants.append(variant)
  iterations = []
  for batch_size in batch_sizes:
    for preset in presets:
      for model in models:
        print(f'compiling {model} {preset} b{batch_size}', file=sys.stderr)
        it = iteration_variant(
          model, preset, batch_size, args.compute_dtype, burst
        )
        iterations.append(it)
        variants.append(it.variant)
        if model == 'gan' and compiler.options(compiler.CONVOLUTIONAL):
          it = iteration_variant(
            model, preset, batch_size, args.compute_dtype, burst, True
          )
          iterations.append(it)
          variants.append(it.variant)
  twins = []
  if args.torch:
    import torch

    torch.set_num_threads(args.torch_threads)
    torch_device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.backends.cudnn.benchmark = True
    layouts = ['nchw', 'channels_last']
    if torch_device == 'cuda':
      layouts.append('bf16')
    for batch_size in batch_sizes:
      for preset in presets:
        for layout in layouts:
          print(f'torch {layout} {preset} b{batch_size}', file=sys.stderr)
          variant = torch_gan_variant(
            preset, batch_size, layout, torch_device, burst
          )
          twins.append((preset, batch_size, layout, variant))
          variants.append(variant)
  alternate(variants, rounds)

  peak_variant, peak_flops = matmuls[0]
  peak = peak_flops / peak_variant.best
  print('## Matmul peak\n')
  _table(
    ['dot', 'GFLOP/s best', 'GFLOP/s median'],
    [
      (v.name, f'{f / v.best / 1e9:.0f}', f'{f / v.median / 1e9:.0f}')
      for v, f in matmuls
    ],
  )
  print(
    f'## Iterations (compute {args.compute_dtype}, % of the float32'
    f' matmul peak {peak / 1e9:.0f} GFLOP/s)\n'
  )
  _table(
    [
      'model',
      'preset',
      'batch',
      'ms min',
      'ms median',
      'images/s',
      'GFLOP/iter',
      '% of peak',
      'compile s',
    ],
    [
      (
        it.label,
        it.preset,
        it.batch_size,
        _ms(it.variant.best),
        _ms(it.variant.median),
        f'{it.images / it.variant.median:.0f}',
        f'{it.flops / 1e9:.1f}' if it.flops else 'n/a',
        f'{100 * it.flops / it.variant.best / peak:.1f}' if it.flops else 'n/a',
        f'{it.compile_s:.1f}',
      )
      for it in iterations
    ],
  )

  defaults = {
    (i.preset, i.batch_size): i.variant for i in iterations if i.xla_defaults
  }
  for i in iterations:
    if i.model == 'gan' and not i.xla_defaults and defaults:
      other = defaults[(i.preset, i.batch_size)]
      print(
        f'GAN {i.preset} b{i.batch_size}: XLA defaults / vi_gen compiler'
        f' options {other.best / i.variant.best:.2f} (min),'
        f' {other.median / i.variant.median:.2f} (median)'
      )
  if defaults:
    print()

  goals = []
  if twins:
    print('## PyTorch twin of the GAN iteration\n')
    gan = {
      (i.preset, i.batch_size): i.variant
      for i in iterations
      if i.model == 'gan' and not i.xla_defaults
    }
    rows = []
    best_ratio = {}
    for preset, batch_size, layout, variant in twins:
      ours = gan.get((preset, batch_size))
      ratio_min = variant.best / ours.best if ours else float('nan')
      ratio_median = variant.median / ours.median if ours else float('nan')
      key = (preset, batch_size)
      if ours and ratio_min < best_ratio.get(key, (float('inf'),))[0]:
        best_ratio[key] = (ratio_min, ratio_median, layout)
      rows.append(
        (
          preset,
          batch_size,
          layout,
          _ms(variant.best),
          _ms(variant.median),
          _ms(ours.best) if ours else 'n/a',
          _ms(ours.median) if ours else 'n/a',
          f'{ratio_min:.2f}',
          f'{ratio_median:.2f}',
        )
      )
    _table(
      [
        'preset',
        'batch',
        'PyTorch',
        'ms min',
        'ms median',
        'vi_gen ms min',
        'vi_gen ms median',
        'PyTorch / vi_gen (min)',
        '(median)',
      ],
      rows,
    )
    for (preset, batch_size), (r_min, r_med, layout) in best_ratio.items():
      goal = GOAL_MNIST if preset == 'mnist' else GOAL_CELEBA
      if accelerator:
        goal = GOAL_MNIST
      goals.append(
        f'{backend} GAN {preset} b{batch_size} vs the best PyTorch'
        f' ({layout}): min {_verdict(r_min, goal)}; median {r_med:.2f}x'
      )

  # --- EM --------------------------------------------------------------------
  if not args.skip_em:
    sizes = [(100_000, 2), (50_000, 16)]
    if args.quick:
      sizes = [(10_000, 2), (5_000, 16)]
    em_runs, data = [], {}
    for seed, (points, dims) in enumerate(sizes):
      label = f'{points // 1000}k x {dims}-D'
      data[label] = em_data(points, dims, seed)
      em_runs += em_variants(data[label], label, seed)
    alternate([r.variant for r in em_runs], em_rounds)
    print(
      f'## EM (K={EM_COMPONENTS}, full covariance, {EM_ITERATIONS}'
      f' iterations, same start, ridge / reg_covar {EM_RIDGE:g};'
      f' {em_rounds} rounds)\n'
    )
    rows = []
    for label in data:
      runs = [r for r in em_runs if r.data == label]
      sk = [r for r in runs if r.name.startswith('sklearn')]
      best_sk = min(sk, key=lambda r: r.variant.best)
      for r in runs:
        ll = mean_log_likelihood(data[label], r.final[0])
        speedup = best_sk.variant.best / r.variant.best
        speedup_median = min(s.variant.median for s in sk) / r.variant.median
        rows.append(
          (
            label,
            r.name,
            f'{r.variant.best:.3f}',
            f'{r.variant.median:.3f}',
            f'{ll:.6f}',
            f'{speedup:.2f}',
            f'{speedup_median:.2f}',
          )
        )
        if r.name.startswith('vi_gen') and 'XLA defaults' not in r.name:
          goal = GOAL_EM_FLOAT32 if 'float32' in r.name else GOAL_EM_FLOAT64
          best_ll = mean_log_likelihood(data[label], best_sk.final[0])
          goals.append(
            f'EM {label} {r.name} vs {best_sk.name}: min {_verdict(speedup, goal)};'
            f' median {speedup_median:.2f}x; log-likelihood'
            f' {ll - best_ll:+.2e} from scikit-learn'
          )
    _table(
      [
        'data',
        'implementation',
        's min',
        's median',
        'final mean log-lik (float64)',
        'speed-up vs best sklearn (min)',
        '(median)',
      ],
      rows,
    )

  if goals:
    print('## Goals (issue 14)\n')
    for line in goals:
      print(f'- {line}')
    print()
  print(f'load average (1/5/15 min) at end: {_load()}')


if __name__ == '__main__':
  main()
