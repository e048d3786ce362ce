"""The alternating-players step that every gradient-trained model runs.

A model declares its schedule as a list of `Phase`s: which networks each
phase trains, its loss (a pure function that calls `vi_gen.losses`), how
many optimizer steps it takes, what its steps see, and which networks it
snapshots as the "old" networks of the paper's eqs. (18)-(26). `alternate`
runs any such schedule as one jit-able iteration, with the EMA and the
metrics. The GAN is [D phase, G phase], the AAE [D phase, autoencoder
phase], ALI [D phase, E/G phase], the VAE one phase.

Also here: what building and running Flax networks inside a train state
needs (`apply`, `init_networks`, `new_state`, `descend`, `unrolled_scan`).

This module knows no model, no loss, no data pipeline and no loop.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vi_gen.state import PyTree, TrainState


class Context(NamedTuple):
  """What a phase's `inputs` sees, at the start of the phase.

  Attributes:
    params: every network's params (earlier phases' updates included).
    batch_stats: every network's BatchNorm statistics.
    old_params: `state.old_params` as the iteration received it (the
      networks of the previous snapshot: the 'lagged' old networks).
    batch: the iteration's real data, [batches_per_iteration, B, ...].
    key: the iteration's key.
  """

  params: dict[str, PyTree]
  batch_stats: dict[str, PyTree]
  old_params: dict[str, PyTree]
  batch: jax.Array
  key: jax.Array


def _no_inputs(ctx: Context) -> tuple[None, None]:
  del ctx
  return None, None


@dataclasses.dataclass(frozen=True)
class Phase:
  """`steps` optimizer steps of the networks in `trains` on `loss`.

  Attributes:
    name: prefix of the phase's metrics (`<name>_loss`, `<name>_grad_norm`).
    trains: the entries of `state.params` this phase updates; every other
      network enters the loss frozen (no gradient reaches it).
    loss: (params, batch_stats, shared, step_input) -> (scalar, (stats,
      metrics)). `params` holds every network; `stats` is {network: new
      BatchNorm statistics} for the networks whose statistics this step
      updates; `metrics` are scalars, averaged over the phase's steps.
    steps: optimizer steps in this phase.
    inputs: Context -> (shared, per_step): `shared` is seen by every step,
      `per_step` is a pytree with a leading axis of length `steps` (step i
      sees entry i), or None.
    snapshot: networks whose params at the start of this phase become
      `state.old_params` (the paper's G^o: what the other player was just
      trained against).
    updates_shared: the loss returns (scalar, (stats, metrics, shared)),
      and the next step sees that `shared`: a step hands the later steps an
      output of its forward pass instead of their computing it again (the
      GAN's first G step in 'phase' mode: its samples are G^o(z)).
  """

  name: str
  trains: tuple[str, ...]
  loss: Callable[..., tuple[jax.Array, tuple[dict, dict]]]
  steps: int = 1
  inputs: Callable[[Context], tuple[Any, Any]] = _no_inputs
  snapshot: tuple[str, ...] = ()
  updates_shared: bool = False


def alternate(
  phases: list[Phase],
  txs: dict[str, optax.GradientTransformation],
  state: TrainState,
  batch: jax.Array,
  key: jax.Array,
  ema: tuple[str, float] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One iteration: every phase in order, each against the networks as the
  phases before it left them.

  Args:
    phases: the schedule.
    txs: optimizer per trained network.
    state: the train state.
    batch: real data, [batches_per_iteration, B, ...].
    key: this iteration's key.
    ema: (network, decay): keep an exponential moving average of that
      network's params in `state.ema_params` (decay 0 = off).

  Returns:
    The new state and scalar metrics: each phase's, averaged over its
    steps, and the parameter norm of every trained network.
  """
  params = dict(state.params)
  batch_stats = dict(state.batch_stats)
  opt_states = dict(state.opt_states)
  old_params = dict(state.old_params)
  metrics = {}
  for phase in phases:
    ctx = Context(params, batch_stats, state.old_params, batch, key)
    shared, per_step = phase.inputs(ctx)
    for name in phase.snapshot:
      old_params[name] = params[name]
    frozen = {n: p for n, p in params.items() if n not in phase.trains}

    def step(carry, step_input, phase=phase, frozen=frozen):
      trained, opt, stats, shared = carry

      def loss_fn(trained):
        return phase.loss({**frozen, **trained}, stats, shared, step_input)

      trained, opt, loss, aux, grad_norm = descend(txs, loss_fn, trained, opt)
      if phase.updates_shared:
        updates, step_metrics, shared = aux
      else:
        updates, step_metrics = aux
      step_metrics = {
        f'{phase.name}_loss': loss,
        **step_metrics,
        f'{phase.name}_grad_norm': grad_norm,
      }
      return (trained, opt, {**stats, **updates}, shared), step_metrics

    carry = (
      {n: params[n] for n in phase.trains},
      {n: opt_states[n] for n in phase.trains},
      batch_stats,
      shared,
    )
    (trained, opt, batch_stats, _), phase_metrics = unrolled_scan(
      step, carry, per_step, length=phase.steps
    )
    params.update(trained)
    opt_states.update(opt)
    metrics.update({k: jnp.mean(v) for k, v in phase_metrics.items()})

  ema_params = state.ema_params
  if ema and ema[1]:
    name, decay = ema
    ema_params = {
      name: optax.incremental_update(
        params[name], state.ema_params[name], 1.0 - decay
      )
    }
  for name in opt_states:
    metrics[f'{name}_param_norm'] = optax.tree.norm(params[name])
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_states=opt_states,
    old_params=old_params,
    ema_params=ema_params,
  )
  return new_state, metrics


def apply(module: nn.Module, params, batch_stats, *inputs, train: bool):
  """Runs a network; returns (outputs, updated BatchNorm statistics)."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train or not batch_stats:
    return module.apply(variables, *inputs, train=train), batch_stats
  outputs, updates = module.apply(
    variables, *inputs, train=True, mutable=['batch_stats']
  )
  return outputs, updates['batch_stats']


def init_networks(
  key: jax.Array, networks: dict[str, tuple[nn.Module, tuple]]
) -> tuple[dict[str, PyTree], dict[str, PyTree]]:
  """Params and BatchNorm statistics ({} without BatchNorm) per network.

  Args:
    key: split into one key per network.
    networks: name -> (module, example inputs).
  """
  keys = jax.random.split(key, len(networks))
  params, batch_stats = {}, {}
  for k, (name, (module, inputs)) in zip(keys, networks.items(), strict=True):
    variables = module.init(k, *inputs, train=False)
    params[name] = variables['params']
    batch_stats[name] = variables.get('batch_stats', {})
  return params, batch_stats


def copy_tree(tree: PyTree) -> PyTree:
  """A copy with fresh buffers.

  Aliasing old or EMA params with the live ones in a donated state makes XLA
  donate one buffer twice, which crashes.
  """
  return jax.tree.map(jnp.copy, tree)


def new_state(
  params: dict[str, PyTree],
  batch_stats: dict[str, PyTree],
  txs: dict[str, optax.GradientTransformation],
  old: tuple[str, ...] = (),
  ema: tuple[str, float] | None = None,
) -> TrainState:
  """Step 0: one optimizer state per entry of `txs`; copies of the `old`
  networks as their old params, and of the `ema` network when its decay is
  not 0."""
  ema_params = {}
  if ema and ema[1]:
    ema_params = {ema[0]: copy_tree(params[ema[0]])}
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_states={name: tx.init(params[name]) for name, tx in txs.items()},
    old_params={name: copy_tree(params[name]) for name in old},
    ema_params=ema_params,
  )


def descend(
  txs: dict[str, optax.GradientTransformation],
  loss_fn: Callable,
  params: dict[str, PyTree],
  opt_states: dict[str, PyTree],
):
  """One optimizer step of every entry of `params` on `loss_fn`.

  Args:
    txs: optimizer per name.
    loss_fn: params -> (scalar loss, aux); differentiated w.r.t. all of
      `params` (only the names given here are trained).
    params: name -> params of the networks this step trains.
    opt_states: name -> optimizer state, for the same names.

  Returns:
    (params, opt_states, loss, aux, global gradient norm).
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  new_params, new_opt_states = {}, {}
  for name, p in params.items():
    updates, new_opt_states[name] = txs[name].update(
      grads[name], opt_states[name], p
    )
    new_params[name] = optax.apply_updates(p, updates)
  return new_params, new_opt_states, loss, aux, optax.tree.norm(grads)


def unrolled_scan(step: Callable, carry, xs=None, length: int | None = None):
  """`jax.lax.scan` unrolled at trace time (steps per phase are few).

  On XLA:CPU the loop that `jax.lax.scan` emits (even with `unroll=True`)
  made the ALI MNIST iteration (1 D step, 1 E/G step) about 8x slower than
  the same steps unrolled: 3.6 s against 0.46 s. Unrolled, the carry's
  structure may change from one step to the next (an entry None at first),
  and NumPy leaves of `xs` stay concrete: a step may branch on them.

  Args:
    step: (carry, x) -> (carry, y), as for `jax.lax.scan`.
    carry: the initial carry.
    xs: a pytree of arrays scanned over their leading axis, or None.
    length: the number of steps when `xs` is None.

  Returns:
    (final carry, the stacked ys).
  """
  if xs is not None:
    length = jax.tree.leaves(xs)[0].shape[0]
  ys = []
  for i in range(length):
    x = None if xs is None else jax.tree.map(lambda a, i=i: a[i], xs)
    carry, y = step(carry, x)
    ys.append(y)
  return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys)
