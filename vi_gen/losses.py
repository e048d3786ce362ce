"""The paper's variational losses as pure functions of arrays.

Equation numbers refer to Su (2018), arXiv:1807.05936 (see `docs` in the
README). Conventions, shared by every function here:

* A discriminator returns a logit `l` with `D = sigmoid(l)`, so
  `-log D = softplus(-l)` and `-log(1 - D) = softplus(l)`; this is exact and
  stable for any logit.
* Every loss returns the mean over the batch (the `E_x` and `E_z` of the
  paper estimated by a minibatch).

This module imports only JAX, so other projects can use it without TensorFlow.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def _neg_log_sigmoid(logits: Array) -> Array:
  """-log sigmoid(l), elementwise."""
  return jax.nn.softplus(-logits)


def _neg_log_one_minus_sigmoid(logits: Array) -> Array:
  """-log(1 - sigmoid(l)), elementwise."""
  return jax.nn.softplus(logits)


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
  if fake.shape != old_fake.shape:
    raise ValueError(
        f'fake and old_fake must have the same shape, got {fake.shape} and '
        f'{old_fake.shape}: G and G^o must be evaluated on the same z.'
    )
  return jnp.mean(jnp.square(fake - jax.lax.stop_gradient(old_fake)))


def regularized_generator_loss(
    fake_logits: Array, fake: Array, old_fake: Array, weight: float
) -> Array:
  """The paper's generator loss, eq. (26): -E log D(G(z)) + w * ||G - G^o||^2.

  With `weight == 0` this is the standard loss of eq. (20).

  Args:
    fake_logits: D's logits on G(z).
    fake: G(z).
    old_fake: G^o(z) on the same z (treated as a constant).
    weight: lambda, applied to the per-element mean (reference value 5).

  Returns:
    The scalar loss.
  """
  return generator_loss(fake_logits) + weight * generator_regularizer(
      fake, old_fake
  )
