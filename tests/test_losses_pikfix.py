import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pikfix_jax.losses import common
from pikfix_jax.losses import pikfix as pikfix_losses
from pikfix_jax.models.discriminator import PatchDiscriminator


def test_perceptual_zero_for_identical_and_positive_otherwise():
  a = {'x': jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))}
  b = {'x': a['x'] + 0.5}
  assert float(common.perceptual_loss(a, a)) == 0.0
  # squared error normalised by C*H*W: a constant offset of 0.5 gives 0.25
  np.testing.assert_allclose(common.perceptual_loss(a, b), 0.25, rtol=1e-6)


def test_luminance_perceptual_uses_features_of_both_images():
  feats = lambda rgb: {'mean': jnp.mean(rgb, axis=(1, 2), keepdims=True)}
  l = jnp.full((2, 8, 8, 1), 0.5)
  assert float(pikfix_losses.luminance_perceptual_loss(feats, l, l)) == pytest.approx(0.0, abs=1e-10)
  assert float(pikfix_losses.luminance_perceptual_loss(feats, l, l * 0.5)) > 0


@pytest.mark.parametrize('kind', common.ADVERSARIAL_LOSSES)
def test_adversarial_signs(kind):
  confident_real, confident_fake = jnp.full((4,), 5.0), jnp.full((4,), -5.0)
  good_d = common.discriminator_loss(confident_real, confident_fake, kind)
  bad_d = common.discriminator_loss(confident_fake, confident_real, kind)
  assert float(good_d) < float(bad_d)
  # G is rewarded when D calls its output real.
  assert float(common.generator_adversarial_loss(confident_real, kind)) < float(
      common.generator_adversarial_loss(confident_fake, kind))


def test_discriminator_condition_is_a_conv_of_the_broadcast_histogram():
  """D(L, ab, histogram) computes its first conv's histogram part without the broadcast image;
  it equals the same parameters applied to [L, ab, broadcast histogram] as plain channels."""
  d = PatchDiscriminator(features=8, num_layers=3)
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  l = jax.random.uniform(keys[0], (2, 40, 56, 1))
  ab = jax.random.uniform(keys[1], (2, 40, 56, 2), minval=-1)
  hist = jax.random.uniform(keys[2], (2, 64))
  params = d.init(keys[3], l, ab, hist)['params']
  assert params['Conv_0']['kernel'].shape == (4, 4, 3 + 64, 8)

  def conditioned(p, ab):
    return d.apply({'params': p}, l, ab, hist)

  def as_channels(p, ab):
    return d.apply({'params': p}, l, jnp.concatenate(
        [ab, jnp.broadcast_to(hist[:, None, None, :], ab.shape[:3] + (64,))], axis=-1))

  def logits_and_grads(fn):
    return jax.jit(lambda p, ab: (fn(p, ab), jax.grad(
        lambda p, ab: jnp.sum(fn(p, ab) ** 2), argnums=(0, 1))(p, ab)))(params, ab)

  out, grads = logits_and_grads(conditioned)
  ref, ref_grads = logits_and_grads(as_channels)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               grads, (ref_grads[0], ref_grads[1][..., :2]))


@pytest.mark.parametrize('kind', common.ADVERSARIAL_LOSSES)
def test_discriminator_learns_separable_real_and_fake(kind):
  d = PatchDiscriminator(features=8, num_layers=2)
  l = jnp.full((4, 32, 32, 1), 0.5)
  real = jnp.broadcast_to(jnp.array([0.4, -0.3]), (4, 32, 32, 2))
  fake = jnp.zeros((4, 32, 32, 2))
  params = d.init(jax.random.PRNGKey(0), l, real)['params']
  opt = optax.adam(1e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(lambda p: common.discriminator_loss(
        d.apply({'params': p}, l, real), d.apply({'params': p}, l, fake), kind))(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  history = []
  for _ in range(30):
    params, state, loss = step(params, state)
    history.append(float(loss))
  assert history[-1] < 0.5 * history[0]
  assert float(jnp.mean(d.apply({'params': params}, l, real))) > float(
      jnp.mean(d.apply({'params': params}, l, fake)))


def test_generator_losses_weighted_sum():
  from configs import default
  cfg = default.get_config().loss
  b, h, w, k = 2, 8, 8, 4
  target = jnp.concatenate([jnp.full((b, h, w, 1), 0.5), jnp.zeros((b, h, w, 2))], -1)
  hist = jnp.full((b, 2, k), 1.0 / k)
  outputs = {'restored_l': target[..., :1] + 0.1, 'ab': target[..., 1:] - 0.2,
             'output_hist': hist, 'reference_hist': hist}
  feats = lambda rgb: {'x': rgb}
  terms = pikfix_losses.generator_loss(outputs, target, jnp.zeros((b, 2, 2, 1)), feats, cfg)
  np.testing.assert_allclose(terms['l1_luminance'], 0.1, rtol=1e-5)
  np.testing.assert_allclose(terms['l1_chroma'], 0.2, rtol=1e-5)
  assert float(terms['emd']) == 0.0
  np.testing.assert_allclose(terms['adversarial'], np.log(2.0), rtol=1e-5)
  expected = (cfg.alpha * 0.1 + cfg.beta * terms['perceptual'] + cfg.gamma * 0.2
              + cfg.eta * np.log(2.0))
  np.testing.assert_allclose(terms['total'], expected, rtol=1e-5)
