import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from pikfix_jax.methods import pikfix as pikfix_method
from pikfix_jax.models import pikfix
from pikfix_jax.ops import histogram
from pikfix_jax.ops import warp


def test_bin_centers_follow_eq4():
  c = histogram.init_bin_centers(8, -1.0, 1.0)
  np.testing.assert_allclose(c, -1.0 + 2.0 / 8 * np.arange(8), atol=1e-7)


def test_sphist_sums_to_one_and_peaks_at_nearest_bin():
  centers = histogram.init_bin_centers(16)
  ab = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 7, 2), minval=-1, maxval=1)
  h = histogram.sphist(ab, centers, 0.1)
  assert h.shape == (2, 5, 7, 32)
  np.testing.assert_allclose(h.reshape(2, 5, 7, 2, 16).sum(-1), 1.0, atol=1e-5)
  nearest = np.argmin(np.abs(np.asarray(ab)[..., None] - np.asarray(centers)), axis=-1)
  np.testing.assert_array_equal(np.asarray(h).reshape(2, 5, 7, 2, 16).argmax(-1), nearest)


def test_sphist_gradients_reach_centers_and_values():
  centers = histogram.init_bin_centers(8)
  ab = jax.random.uniform(jax.random.PRNGKey(1), (1, 4, 4, 2), minval=-1, maxval=1)
  target = jax.random.dirichlet(jax.random.PRNGKey(2), jnp.ones(8), (2,))

  def loss(c, v):
    return histogram.emd_loss(histogram.global_histogram(histogram.sphist(v, c, 0.1))[0], target)

  gc, gv = jax.grad(loss, argnums=(0, 1))(centers, ab)
  assert float(jnp.abs(gc).sum()) > 0 and float(jnp.abs(gv).sum()) > 0


def test_emd_zero_symmetric_and_matches_numpy():
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(10), size=(3, 2)).astype(np.float32)
  q = rng.dirichlet(np.ones(10), size=(3, 2)).astype(np.float32)
  assert float(histogram.emd_loss(p, p)) == 0.0
  np.testing.assert_allclose(histogram.emd_loss(p, q), histogram.emd_loss(q, p), rtol=1e-6)
  expected = np.mean(np.sum((np.cumsum(p, -1) - np.cumsum(q, -1)) ** 2, -1))
  np.testing.assert_allclose(histogram.emd_loss(p, q), expected, rtol=1e-5)


def test_warp_rows_sum_to_one_and_self_match():
  feats = jax.random.normal(jax.random.PRNGKey(3), (2, 50, 16))
  # Values = one-hot of the key position: the warp returns the softmax rows themselves.
  values = jnp.broadcast_to(jnp.eye(50), (2, 50, 50))
  rows, conf = warp.warp_dense(feats, feats, values, temperature=0.005)
  np.testing.assert_allclose(rows.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(rows).argmax(-1), np.tile(np.arange(50), (2, 1)))
  np.testing.assert_allclose(conf, 1.0, atol=1e-5)


def test_warp_matches_textbook_softmax_values_and_gradients():
  """The warp's normaliser taken from the same matrix product (exp(..) @ [v, 1]) against the
  textbook softmax(sim / T) @ v, at the paper's temperature, values and gradients."""
  kq, kk, kv, kw = jax.random.split(jax.random.PRNGKey(5), 4)
  q = jax.random.normal(kq, (2, 40, 16))
  k = jax.random.normal(kk, (2, 30, 16))
  v = jax.nn.softmax(jax.random.normal(kv, (2, 30, 6)), -1)
  w_out, w_conf = jax.random.normal(kw, (2, 40, 6)), jnp.linspace(-1.0, 1.0, 40)[:, None]

  def textbook(q, k, v, temperature=0.005):
    sim = jnp.einsum('bqc,bkc->bqk', warp.center_and_normalize(q),
                     warp.center_and_normalize(k))
    return jax.nn.softmax(sim / temperature, axis=-1) @ v, jnp.max(sim, -1, keepdims=True)

  for a, b in zip(warp.warp_dense(q, k, v, 0.005), textbook(q, k, v)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  loss = lambda fn: lambda q, k, v: (jnp.sum(fn(q, k, v)[0] * w_out)
                                     + jnp.sum(fn(q, k, v)[1] * w_conf))
  grads = jax.grad(loss(lambda *a: warp.warp_dense(*a, 0.005)), argnums=(0, 1, 2))(q, k, v)
  expected = jax.grad(loss(textbook), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(grads, expected):
    assert float(jnp.max(jnp.abs(b))) > 0.1
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


def test_chunked_warp_equals_dense_values_and_gradients():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
  q = jax.random.normal(k1, (2, 37, 8))
  k = jax.random.normal(k2, (2, 29, 8))
  v = jax.nn.softmax(jax.random.normal(k3, (2, 29, 6)), -1)
  dense = warp.warp_dense(q, k, v, 0.05)
  chunked = warp.warp_histogram(q, k, v, 0.05, chunk=8)
  for a, b in zip(dense, chunked):
    np.testing.assert_allclose(a, b, atol=1e-5)
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v)[0] ** 2)
  g_dense = jax.grad(loss(lambda *a: warp.warp_dense(*a, 0.05)), argnums=(0, 1, 2))(q, k, v)
  g_chunk = jax.grad(loss(lambda *a: warp.warp_histogram(*a, 0.05, chunk=8)),
                     argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_dense, g_chunk):
    np.testing.assert_allclose(a, b, atol=1e-5)


def _emd_between(out_ab, ref_ab, centers):
  p = histogram.global_histogram(histogram.sphist(out_ab, centers, 0.1))
  q = histogram.global_histogram(histogram.sphist(ref_ab, centers, 0.1))
  return histogram.emd_loss(p, q), p, q


def test_emd_alone_moves_learnable_centres_to_a_trivial_solution():
  """Why the EMD term's histograms use fixed centres (model.histogram.loss_centers='fixed'):
  trained on the EMD alone, shared learnable centres make two different colour distributions'
  histograms equal by moving out of the colours' range, the colours unchanged."""
  rng = np.random.default_rng(0)
  out_ab = jnp.asarray(np.clip(rng.normal(0.3, 0.1, (1, 16, 16, 2)), -1, 1), jnp.float32)
  ref_ab = jnp.asarray(np.clip(rng.normal(-0.3, 0.1, (1, 16, 16, 2)), -1, 1), jnp.float32)
  centers = histogram.init_bin_centers(16)
  before = float(_emd_between(out_ab, ref_ab, centers)[0])
  tx = optax.adam(1e-2)
  opt_state = tx.init(centers)
  step = jax.jit(jax.value_and_grad(lambda c: _emd_between(out_ab, ref_ab, c)[0]))
  for _ in range(300):
    _, grads = step(centers)
    updates, opt_state = tx.update(grads, opt_state, centers)
    centers = optax.apply_updates(centers, updates)
  after, p, q = _emd_between(out_ab, ref_ab, centers)
  assert float(after) < 0.02 * before, (before, float(after))
  # Both distributions land in the same one bin: the histograms no longer see the colours.
  assert float(jnp.min(jnp.max(p, axis=-1))) > 0.9 and float(jnp.min(jnp.max(q, axis=-1))) > 0.9


@pytest.mark.parametrize('mode', ['fixed', 'learned'])
def test_emd_reaches_the_bin_centres_only_when_the_loss_centres_are_learned(mode):
  config = default.get_config().model
  config.histogram.num_bins = 8
  config.histogram.loss_centers = mode
  model = pikfix.build_generator(config)
  rng = np.random.default_rng(1)
  out_ab, ref_ab = (jnp.asarray(rng.uniform(-0.5, 0.5, (1, 8, 8, 2)), jnp.float32)
                    for _ in range(2))

  def emd(centers):
    loss_centers = model.apply({'params': {'bin_centers': centers}},
                               method=pikfix.PikFix.loss_centers)
    return _emd_between(out_ab, ref_ab, loss_centers)[0]

  grads = jax.grad(emd)(histogram.init_bin_centers(8) + 0.01)
  if mode == 'fixed':
    assert float(jnp.abs(grads).max()) == 0.0
    assert float(emd(histogram.init_bin_centers(8) + 0.3)) == float(
        emd(histogram.init_bin_centers(8)))  # the model's centres do not enter the loss
  else:
    assert float(jnp.abs(grads).max()) > 1e-4


def test_bin_center_spread_logged_in_training():
  spread = pikfix_method.bin_center_spread(jnp.array([0.5, -1.0, 0.0, 0.25]))
  np.testing.assert_allclose([float(spread[k]) for k in ('bin_center_min', 'bin_center_max',
                                                          'bin_gap_mean', 'bin_gap_min')],
                             [-1.0, 0.5, 0.5, 0.25])
