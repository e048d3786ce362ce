"""The paper's variational losses as pure functions of arrays.

Equation numbers refer to Su (2018), arXiv:1807.05936 (the README's
References). Conventions, shared by every function here:

* A discriminator returns a logit `l` with `D = sigmoid(l)`, so
  `-log D = softplus(-l)` and `-log(1 - D) = softplus(l)`; this is exact and
  stable for any logit.
* Every loss returns the mean over the batch (the `E_x` and `E_z` of the
  paper estimated by a minibatch); the per-example log-densities
  (`gaussian_kl`, `gaussian_nll`, `bernoulli_nll`) return shape [B].
* Arrays are batch-major: [B, ...].

Which side a logit comes from follows the paper, and it differs by model:
GAN's D(x) is P(x is real); AAE's D(z) is P(z is a *prior* sample); ALI's
D(x, z) is P(the pair came from the encoder side (x, E(x))).

This module imports only JAX, so other projects can use it without TensorFlow.
"""

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_LOG_2PI = math.log(2.0 * math.pi)
ALI_VARIANTS = ('vi', 'minmax', 'nonsaturating')
LIKELIHOODS = ('gaussian', 'bernoulli')


# ---------------------------------------------------------------- helpers ---


def _neg_log_sigmoid(logits: Array) -> Array:
  """-log sigmoid(l), elementwise."""
  return jax.nn.softplus(-logits)


def _neg_log_one_minus_sigmoid(logits: Array) -> Array:
  """-log(1 - sigmoid(l)), elementwise."""
  return jax.nn.softplus(logits)


def _sum_non_batch(x: Array) -> Array:
  """Sums over every axis but the first: [B, ...] -> [B]."""
  return jnp.sum(x, axis=tuple(range(1, jnp.ndim(x))))


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f'{name} must be one of {tuple(allowed)}, got {value!r}.')


def _check_broadcasts_to(shape: tuple[int, ...], **arrays: ArrayLike) -> None:
  """Guards against silent broadcasting (e.g. [B] against [B, 1])."""
  shapes = {k: jnp.shape(v) for k, v in arrays.items()}
  if jnp.broadcast_shapes(shape, *shapes.values()) != shape:
    raise ValueError(f'{shapes} must all broadcast to {shape}.')


def _difference(a: Array, b: Array, names: str, why: str = '') -> Array:
  """a - b elementwise; a and b must have the same shape."""
  if a.shape != b.shape:
    raise ValueError(
      f'{names} must have the same shape, got {a.shape} and {b.shape}{why}.'
    )
  return a - b


def _squared_error(a: Array, b: Array, names: str, why: str = '') -> Array:
  """(a - b)^2 elementwise; a and b must have the same shape."""
  return jnp.square(_difference(a, b, names, why))


def _scaled_square(diff: ArrayLike, logvar: ArrayLike) -> Array:
  """diff^2 * exp(-logvar) elementwise, finite wherever the result is.

  `square(diff) * exp(-logvar)` overflows in the exponential first (float32:
  logvar < -88.7 gives inf, and NaN where diff = 0). Scaling diff by
  exp(-logvar / 2) before squaring is exact at logvar = 0 and stays finite
  down to logvar = -2 log(max float) (-177 in float32); below that the log
  form exp(2 (log|diff| - logvar / 2)) takes over. Each branch only sees
  inputs on which it is finite, so the gradient of the branch not taken is
  zero rather than NaN.
  """
  half = -0.5 * jnp.asarray(logvar)
  limit = math.log(jnp.finfo(jnp.result_type(diff, half)).max)
  direct_ok = half < limit
  direct = jnp.square(diff * jnp.exp(jnp.where(direct_ok, half, 0.0)))
  nonzero = diff != 0
  log_abs = jnp.log(jnp.abs(jnp.where(nonzero, diff, 1.0)))
  log_form = jnp.where(nonzero & ~direct_ok, 2.0 * (log_abs + half), -jnp.inf)
  return jnp.where(direct_ok, direct, jnp.exp(log_form))


# -------------------------------------------------------------------- GAN ---


def discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
  """GAN discriminator loss, eq. (16): -E log D(x) - E log(1 - D(G(z))).

  The reference code halves this; we keep the paper's form (the factor only
  rescales D's gradient, which Adam undoes).

  Args:
    real_logits: D's logits on data, shape [B] or [B, 1].
    fake_logits: D's logits on generated samples, shape [B'] or [B', 1].

  Returns:
    The scalar loss.
  """
  return jnp.mean(_neg_log_sigmoid(real_logits)) + jnp.mean(
    _neg_log_one_minus_sigmoid(fake_logits)
  )


def generator_loss(fake_logits: Array) -> Array:
  """Standard non-saturating generator loss, eq. (20): -E_z log D(G(z)).

  The paper shows this is only the first term of the complete loss (19); the
  missing term is KL(q(x) || q^o(x)), see `regularized_generator_loss`.
  """
  return jnp.mean(_neg_log_sigmoid(fake_logits))


def saturating_generator_loss(fake_logits: Array) -> Array:
  """The minimax generator loss that eq. (20) replaces: E_z log(1 - D(G(z))).

  In the min-max game G maximises D's loss, eq. (16); the data term of (16)
  does not depend on G, so G minimises E_z log(1 - D(G(z))) =
  -E softplus(l) (Goodfellow et al. 2014's original objective; the paper
  writes this form only for ALI, eq. 42, the negative of D's loss 38).

  It saturates: d/dl log(1 - sigmoid(l)) = -sigmoid(l) = -D, so when D
  rejects the samples confidently (l -> -inf, as early in training) the
  gradient vanishes like e^l. Eq. (20)'s -log D(G(z)) has the same fixed
  points but gradient -(1 - D) -> -1 there.

  Args:
    fake_logits: D's logits on generated samples, shape [B] or [B, 1].

  Returns:
    The scalar loss (<= 0).
  """
  return -jnp.mean(_neg_log_one_minus_sigmoid(fake_logits))


def generator_regularizer(fake: Array, old_fake: Array) -> Array:
  """The distance term of eq. (26): mean over all elements of (G - G^o)^2.

  Eq. (25) estimates KL(q(x) || q^o(x)) by lambda * E_z ||G(z) - G^o(z)||^2.
  We average over every element instead of summing per sample, as the
  reference code does, so that its weight (5) carries over unchanged. The old
  samples are a fixed target: no gradient flows into `old_fake`.

  Args:
    fake: G(z) from the generator being trained, shape [B, ...].
    old_fake: G^o(z) from the old generator on the same z, same shape.

  Returns:
    The scalar mean squared difference.
  """
  return jnp.mean(
    _squared_error(
      fake,
      jax.lax.stop_gradient(old_fake),
      'fake and old_fake',
      ': G and G^o must be evaluated on the same z',
    )
  )


def regularized_generator_loss(
  fake_logits: Array,
  fake: Array,
  old_fake: Array,
  weight: float,
  adversarial: Literal['nonsaturating', 'saturating'] = 'nonsaturating',
) -> Array:
  """The paper's generator loss, eq. (26): -E log D(G(z)) + w * ||G - G^o||^2.

  With `weight == 0` this is the standard loss of eq. (20).

  Args:
    fake_logits: D's logits on G(z).
    fake: G(z).
    old_fake: G^o(z) on the same z (treated as a constant).
    weight: lambda, applied to the per-element mean (reference value 5).
    adversarial: the first term: 'nonsaturating', eq. (20), or
      'saturating', `saturating_generator_loss`.

  Returns:
    The scalar loss.

  Raises:
    ValueError: an unknown `adversarial`.
  """
  if adversarial == 'nonsaturating':
    first = generator_loss(fake_logits)
  elif adversarial == 'saturating':
    first = saturating_generator_loss(fake_logits)
  else:
    raise ValueError(
      "adversarial must be 'nonsaturating' or 'saturating', got"
      f' {adversarial!r}.'
    )
  return first + weight * generator_regularizer(fake, old_fake)


# -------------------------------------------------- densities and the VAE ---


def gaussian_kl(mean: Array, logvar: Array) -> Array:
  """KL(N(mean, diag exp(logvar)) || N(0, I)) per example: eqs. (6)-(7).

  0.5 * sum_j (mean_j^2 + exp(logvar_j) - logvar_j - 1), with
  exp(logvar) - 1 as expm1(logvar): near the prior (logvar -> 0) the naive
  form cancels to rounding noise of either sign (float32: -1.2e-7 where the
  KL is 1e-12), expm1 keeps it >= 0 and accurate.

  Args:
    mean: [B, ...] encoder means.
    logvar: log-variances, broadcastable to `mean`.

  Returns:
    [B], summed over the latent (non-batch) dims.
  """
  _check_broadcasts_to(mean.shape, logvar=logvar)
  return 0.5 * _sum_non_batch(jnp.square(mean) + (jnp.expm1(logvar) - logvar))


def gaussian_nll(x: Array, mean: ArrayLike, logvar: ArrayLike) -> Array:
  """-log N(x; mean, diag exp(logvar)) per example: the -log q(x|z) of (7).

  Includes the 0.5 * log(2 pi) constant, so it is a true log-density. The
  squared error is scaled by exp(-logvar) without overflowing early, so a
  tiny variance (logvar = -100 in float32) gives its finite value.

  Args:
    x: [B, ...] observations.
    mean: means, broadcastable to `x` (usually the same shape).
    logvar: log-variances broadcastable to `x`: a scalar for a fixed variance,
      or per element for a learned one.

  Returns:
    [B], summed over all non-batch dims.
  """
  _check_broadcasts_to(x.shape, mean=mean, logvar=logvar)
  sq = _scaled_square(x - mean, logvar)
  return 0.5 * _sum_non_batch(sq + logvar + _LOG_2PI)


def bernoulli_nll(logits: Array, x: Array) -> Array:
  """-log Bernoulli(x; sigmoid(logits)) per example (binary cross-entropy).

  The Bernoulli -log q(x|z) of (7): x * softplus(-l) + (1 - x) * softplus(l).
  `x` in [0, 1] may be non-binary (plain BCE, no continuous-Bernoulli
  normaliser).

  Args:
    logits: [B, ...] decoder logits.
    x: targets, same shape.

  Returns:
    [B], summed over all non-batch dims.
  """
  _check_broadcasts_to(x.shape, logits=logits)
  return _sum_non_batch(
    x * _neg_log_sigmoid(logits) + (1 - x) * _neg_log_one_minus_sigmoid(logits)
  )


def reparameterize(key: Array, mean: Array, logvar: Array) -> Array:
  """One sample z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) (eq. 7)."""
  eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
  return mean + jnp.exp(0.5 * logvar) * eps


def vae_loss(
  x: Array,
  recon: Array,
  mean: Array,
  logvar: Array,
  *,
  likelihood: Literal['gaussian', 'bernoulli'] = 'gaussian',
  recon_logvar: ArrayLike = 0.0,
) -> tuple[Array, dict[str, Array]]:
  """VAE loss, eq. (7): E_x[-log q(x|z) + KL(p(z|x) || N(0, I))].

  The caller samples z = `reparameterize(key, mean, logvar)` and decodes it,
  then passes the decoder's output. Taking the decoded output rather than a
  decoder callable keeps this a pure function of arrays: it works with any
  network library, parameter layout, or extra decoder state, and the
  one-sample estimate is reproducible from a fixed z.

  Args:
    x: [B, ...] data.
    recon: the decoder's output on the sampled z, same shape as `x`: the
      Gaussian mean, or the Bernoulli logits.
    mean: [B, d] encoder means of p(z|x).
    logvar: encoder log-variances, same shape as `mean`.
    likelihood: 'gaussian', q(x|z) = N(recon, exp(recon_logvar)), or
      'bernoulli', q(x|z) = Bernoulli(sigmoid(recon)).
    recon_logvar: Gaussian log-variance, broadcastable to `x`: a scalar for a
      fixed variance (0 gives ||x - recon||^2 / 2 + const) or per element for
      a learned one. Ignored for 'bernoulli'.

  Returns:
    (loss, {'loss', 'reconstruction', 'kl'}), all scalar batch means, with
    loss = reconstruction + kl.
  """
  _check_choice('likelihood', likelihood, LIKELIHOODS)
  if likelihood == 'gaussian':
    rec = gaussian_nll(x, recon, recon_logvar)
  else:
    rec = bernoulli_nll(recon, x)
  rec, kl = jnp.mean(rec), jnp.mean(gaussian_kl(mean, logvar))
  loss = rec + kl
  return loss, {'loss': loss, 'reconstruction': rec, 'kl': kl}


# -------------------------------------------------------------------- AAE ---


def aae_discriminator_loss(code_logits: Array, prior_logits: Array) -> Array:
  """AAE discriminator loss, eq. (30).

  D(z) = q(0|z) is the probability that z is a PRIOR sample (the reverse of
  the GAN convention): -E_x log(1 - D(E(x))) - E_{z~q(z)} log D(z), i.e.
  eq. (16) with prior samples as "real" and codes as "fake".

  Args:
    code_logits: D's logits on encoded codes E(x), shape [B] or [B, 1].
    prior_logits: D's logits on prior samples z ~ N(0, I), [B'] or [B', 1].
  """
  return discriminator_loss(prior_logits, code_logits)


def aae_encoder_loss(code_logits: Array) -> Array:
  """AAE encoder loss, eq. (33): -E_x log D(E(x)).

  Eq. (32) without its KL(p(z) || p^o(z)) term. Shape [B] or [B, 1].
  """
  return generator_loss(code_logits)


def aae_loss(
  code_logits: Array, x: Array, x_recon: Array, weight: float
) -> Array:
  """Joint encoder/decoder AAE loss, eq. (34).

  -E log D(E(x)) + weight * mean over all elements of (x - G(E(x)))^2; like
  `generator_regularizer`, the squared error is a per-element mean.

  Args:
    code_logits: D's logits on E(x), shape [B] or [B, 1].
    x: [B, ...] data.
    x_recon: G(E(x)), same shape as `x`.
    weight: lambda of eq. (34), on the per-element mean.
  """
  rec = jnp.mean(_squared_error(x, x_recon, 'x and x_recon'))
  return aae_encoder_loss(code_logits) + weight * rec


# -------------------------------------------------------------------- ALI ---


def ali_discriminator_loss(
  encoder_logits: Array, generator_logits: Array
) -> Array:
  """ALI/BiGAN discriminator loss, eq. (38).

  -E log D(x, E(x)) - E log(1 - D(G(z), z)): D(x, z) = p(1|x, z) is the
  probability that the pair comes from the encoder side.

  Args:
    encoder_logits: D(x, z) with x data and z ~ p(z|x), shape [B] or [B, 1].
    generator_logits: D(x, z) with z ~ N(0, I), x ~ q(x|z), [B'] or [B', 1].
  """
  return discriminator_loss(encoder_logits, generator_logits)


def ali_generator_encoder_loss(
  encoder_logits: Array,
  generator_logits: Array,
  variant: Literal['vi', 'minmax', 'nonsaturating'] = 'vi',
) -> Array:
  """The joint generator/encoder ALI loss, D frozen.

  * 'vi', the paper's eq. (41): -E log D(x, E(x)) - E log D(G(z), z). Both
    sides push D -> 1; the encoder pulls in the same direction as D.
  * 'minmax', eq. (42): E log D(x, E(x)) + E log(1 - D(G(z), z)) = -eq. (38).
  * 'nonsaturating', eq. (43), labels swapped:
    -E log(1 - D(x, E(x))) - E log D(G(z), z).

  'vi' and 'nonsaturating' share the generator term and have opposite
  encoder terms. See `ali_generator_kl` and `ali_latent_cycle` for the two
  terms of eq. (40) that (41) drops.

  Args:
    encoder_logits: D(x, E(x)) logits, shape [B] or [B, 1].
    generator_logits: D(G(z), z) logits, shape [B'] or [B', 1].
    variant: one of 'vi', 'minmax', 'nonsaturating'.
  """
  _check_choice('variant', variant, ALI_VARIANTS)
  if variant == 'minmax':
    return -ali_discriminator_loss(encoder_logits, generator_logits)
  if variant == 'vi':
    encoder_term = jnp.mean(_neg_log_sigmoid(encoder_logits))
  else:
    encoder_term = jnp.mean(_neg_log_one_minus_sigmoid(encoder_logits))
  return encoder_term + generator_loss(generator_logits)


def ali_generator_kl(fake: Array, old_fake: Array, sigma_g: float) -> Array:
  """DERIVED (not in the paper): eq. (40)'s E_z KL(q(x|z) || q^o(x|z)).

  For q(x|z) = N(G(z), sigma_g^2 I) the KL between two Gaussians with equal
  covariance is ||G(z) - G^o(z)||^2 / (2 sigma_g^2), i.e. eq. (25) with
  lambda = 1 / (2 sigma_g^2) on the per-sample sum. No gradient flows into
  `old_fake`. The difference is divided by sigma_g before squaring, so a
  small sigma_g whose square underflows (float32: below about 1e-19) still
  gives the finite value.

  Args:
    fake: G(z), shape [B, ...].
    old_fake: G^o(z) on the same z, same shape.
    sigma_g: the generator's fixed noise scale.

  Returns:
    Batch mean of the per-sample sum of squares over 2 sigma_g^2.
  """
  diff = _difference(fake, jax.lax.stop_gradient(old_fake), 'fake and old_fake')
  return 0.5 * jnp.mean(_sum_non_batch(jnp.square(diff / sigma_g)))


def ali_latent_cycle(
  z: Array, code: Array, old_code: Array, sigma_e: float
) -> Array:
  """DERIVED (not in the paper): eq. (40)'s E log(p^o(z|x) / p(z|x)).

  With p(z|x) = N(E(x), sigma_e^2 I) the normalisers cancel, leaving
  E[||z - E(x)||^2 - ||z - E^o(x)||^2] / (2 sigma_e^2), where z ~ N(0, I) and
  x = G(z) + sigma_g * eps. It rewards E(G(z)) ~ z and diverges as
  sigma_e -> 0 (the Dirac case).

  Both codes depend on G through x, so no stop-gradient is applied here: the
  caller freezes only E^o's parameters when computing `old_code`.

  Args:
    z: the prior samples, shape [B, d].
    code: E(x) under the current encoder, same shape.
    old_code: E^o(x) under the old encoder on the same x, same shape.
    sigma_e: the encoder's fixed noise scale.

  Returns:
    The scalar batch mean.
  """
  # Divided by sigma_e before squaring, as in `ali_generator_kl`.
  new = jnp.square(_difference(z, code, 'z and code') / sigma_e)
  old = jnp.square(_difference(z, old_code, 'z and old_code') / sigma_e)
  return 0.5 * jnp.mean(_sum_non_batch(new) - _sum_non_batch(old))
