"""models/ldm.py and losses/wan_ldm.py: the cosine schedule against its closed form, DDIM
against distributions whose true epsilon is known in closed form, one compile for every step
count, the U-Net's shapes, and a small denoiser overfitting four latents."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pikfix_jax.losses import wan_ldm as ldm_losses
from pikfix_jax.models import ldm

T = 1000


def test_cosine_schedule_matches_its_closed_form():
  ac = ldm.cosine_alphas_cumprod(T)
  t = np.arange(T)
  # Nichol & Dhariwal eq. 17: abar_t = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) pi / 2),
  # here at 0-based t + 1.
  f = lambda u: np.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2
  closed = f(t + 1.0) / f(0.0)
  betas = 1.0 - ac / np.concatenate([[1.0], ac[:-1]])
  unclipped = betas < ldm.MAX_BETA - 1e-12
  assert unclipped[:-1].all() and not unclipped[-1]  # only the last beta hits the 0.999 clip
  np.testing.assert_allclose(ac[unclipped], closed[unclipped], rtol=1e-9, atol=1e-12)
  assert np.all(np.diff(ac) < 0) and ac[0] > 0.9999 and 0 < ac[-1] < 1e-8
  np.testing.assert_allclose(ldm.cosine_alpha_bar(np.array([0.0, 0.5, 1.0])),
                             [1.0, f(T / 2) / f(0), 0.0], atol=1e-12)


def test_trailing_timesteps_start_at_noise_and_end_at_data():
  for steps in (1, 3, 10, 50, 1000):
    ts = [ldm.ddim_timesteps(i, steps, T) for i in range(steps)]
    assert ts[0][0] == T - 1 and ts[-1][1] == -1
    assert all(a[1] == b[0] for a, b in zip(ts, ts[1:]))  # a chain
    assert all(t > tp for t, tp in ts)


def test_parameterisations_invert_each_other():
  key = jax.random.PRNGKey(0)
  z0, noise = jax.random.normal(key, (2, 4, 3, 2, 5))
  abar = jnp.array([0.9, 1e-3, 0.5, 0.2])
  z_t = ldm.q_sample(z0, noise, abar)
  eps, x0 = ldm.to_eps_x0(ldm.v_target(z0, noise, abar), z_t, abar, 'v')
  np.testing.assert_allclose(eps, noise, atol=1e-4)
  np.testing.assert_allclose(x0, z0, atol=1e-4)
  eps, x0 = ldm.to_eps_x0(noise, z_t, abar, 'eps')
  np.testing.assert_allclose(x0, z0, atol=2e-3)
  np.testing.assert_array_equal(ldm_losses.diffusion_target(z0, noise, abar, 'eps'), noise)


def _gaussian_mixture_eps(weights, means, stds):
  """The exact E[eps | z_t] of z_0 ~ sum_k w_k N(mu_k, s_k^2) (1-D):
  -sqrt(1 - abar) d/dz log p_t(z), p_t = sum_k w_k N(sqrt(abar) mu_k, abar s_k^2 + 1 - abar)."""
  w, mu, s = (jnp.asarray(a, jnp.float32) for a in (weights, means, stds))
  ac = jnp.asarray(ldm.cosine_alphas_cumprod(T), jnp.float32)

  def eps(z, t):
    a = ac[t][:, None]
    m, var = jnp.sqrt(a) * mu, a * s ** 2 + 1.0 - a
    zz = z.reshape(z.shape[0], 1)
    log_p = jnp.log(w) - 0.5 * jnp.log(var) - 0.5 * (zz - m) ** 2 / var
    resp = jax.nn.softmax(log_p, axis=-1)
    score = jnp.sum(resp * -(zz - m) / var, axis=-1, keepdims=True)
    return (-jnp.sqrt(1.0 - a) * score).reshape(z.shape)
  return eps, ac


def _as_v(eps_fn, ac):
  """The exact v-prediction from the exact eps: v = (eps - sqrt(1 - abar) z_t) / sqrt(abar)
  written stably as sqrt(abar) eps - sqrt(1 - abar) x0^."""
  def v(z, t):
    a = ac[t].reshape((-1,) + (1,) * (z.ndim - 1))
    e = eps_fn(z, t)
    x0 = (z - jnp.sqrt(1 - a) * e) / jnp.sqrt(a)
    return jnp.sqrt(a) * e - jnp.sqrt(1 - a) * x0
  return v


@pytest.mark.parametrize('parameterization', ['eps', 'v'])
@pytest.mark.parametrize('steps', [1, 10, 50])
def test_ddim_is_the_exact_affine_map_of_a_gaussian(parameterization, steps):
  """For z_0 ~ N(mu, s^2) with the exact epsilon, each deterministic DDIM step is affine:
  z_prev - m_prev = k (z_t - m_t), m_t = sqrt(abar_t) mu, k = (sqrt(abar_prev abar_t) s^2 +
  sqrt((1 - abar_prev)(1 - abar_t))) / (abar_t s^2 + 1 - abar_t) (eqs. 4 and 12): the sampler
  equals that product elementwise."""
  mean, std = 1.5, 0.5
  eps, ac = _gaussian_mixture_eps([1.0], [mean], [std])
  fn = eps if parameterization == 'eps' else _as_v(eps, ac)
  z_T = jax.random.normal(jax.random.PRNGKey(1), (1000, 1, 1, 1))
  x = ldm.ddim_sample(fn, z_T, jax.random.PRNGKey(2), steps, 0.0, ac, parameterization)
  a = np.asarray(ldm.cosine_alphas_cumprod(T))
  gain = 1.0
  for i in range(steps):
    t, tp = ldm.ddim_timesteps(i, steps, T)
    ap = a[tp] if tp >= 0 else 1.0
    gain *= ((np.sqrt(ap * a[t]) * std ** 2 + np.sqrt((1 - ap) * (1 - a[t]))) /
             (a[t] * std ** 2 + 1 - a[t]))
  expected = mean + gain * (np.asarray(z_T) - np.sqrt(a[-1]) * mean)
  np.testing.assert_allclose(np.asarray(x), expected, atol=2e-3)


@pytest.mark.parametrize('parameterization,eta,steps,tolerance', [
    ('eps', 0.0, 200, 0.025), ('v', 0.0, 200, 0.025), ('v', 1.0, 200, 0.04)])
def test_ddim_reproduces_a_gaussian_with_the_true_epsilon(parameterization, eta, steps,
                                                          tolerance):
  """Mean and spread of 20000 samples. The discretisation shrinks the spread (each step's
  gain above is at most the true ratio, by Cauchy-Schwarz; with eta = 1 the reverse variance
  beta~ is the lower bound of Bao et al. 2022): -3.6 % at 50 steps, -1.3 % at 200 (eta 0);
  -2.3 % with 200 ancestral steps (eta 1). The sample's own error is 0.5 % (1 sigma)."""
  mean, std = 1.5, 0.5
  eps, ac = _gaussian_mixture_eps([1.0], [mean], [std])
  fn = eps if parameterization == 'eps' else _as_v(eps, ac)
  z_T = jax.random.normal(jax.random.PRNGKey(1), (20000, 1, 1, 1))
  sample = jax.jit(lambda z, k, n: ldm.ddim_sample(fn, z, k, n, eta, ac, parameterization))
  x = np.asarray(sample(z_T, jax.random.PRNGKey(2), steps)).ravel()
  assert abs(x.mean() - mean) < 0.02, x.mean()
  assert abs(x.std() - std) < tolerance * std, x.std()
  if eta == 0.0:  # converges with the step count
    errors = [abs(np.asarray(sample(z_T, jax.random.PRNGKey(2), n)).std() - std)
              for n in (10, 50)]
    assert errors[0] > errors[1] > abs(x.std() - std)


def test_ddim_reproduces_a_gaussian_mixture_with_the_true_epsilon():
  weights, means, stds = [0.3, 0.7], [-2.0, 1.0], [0.3, 0.5]
  eps, ac = _gaussian_mixture_eps(weights, means, stds)
  z_T = jax.random.normal(jax.random.PRNGKey(3), (20000, 1, 1, 1))
  x = np.asarray(jax.jit(lambda z: ldm.ddim_sample(eps, z, jax.random.PRNGKey(0), 100, 0.0, ac,
                                                   'eps'))(z_T)).ravel()
  true_mean = float(np.dot(weights, means))
  true_var = float(np.dot(weights, np.square(stds) + np.square(means))) - true_mean ** 2
  assert abs(x.mean() - true_mean) < 0.04, x.mean()
  assert abs(x.var() - true_var) < 0.04 * true_var, x.var()
  assert abs(np.mean(x < -0.5) - weights[0]) < 0.015  # the modes' weights


def test_changing_the_step_count_or_eta_does_not_retrace():
  traces = []
  ac = jnp.asarray(ldm.cosine_alphas_cumprod(T), jnp.float32)

  def denoise(z, t):
    return 0.5 * z

  @jax.jit
  def sample(z, steps, eta):
    traces.append(1)  # runs once per trace
    return ldm.ddim_sample(denoise, z, jax.random.PRNGKey(0), steps, eta, ac, 'v')

  z = jnp.ones((2, 4, 4, 3))
  outs = [sample(z, steps, eta) for steps, eta in ((1, 0.0), (10, 0.0), (50, 1.0), (10, 0.0))]
  assert len(traces) == 1
  assert not np.allclose(outs[0], outs[1])
  np.testing.assert_array_equal(outs[1], outs[3])


def test_unet_shapes_any_latent_size_and_identity_start():
  net = ldm.LatentUNet(widths=(4, 8), res_blocks=1, heads=2)
  z = jnp.ones((2, 5, 7, 2))
  c = jnp.ones((2, 5, 7, 3))
  t = jnp.array([0, 999])
  variables = jax.jit(net.init)(jax.random.PRNGKey(0), z, t, c)
  out = jax.jit(net.apply)(variables, z, t, c)
  assert out.shape == z.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised output conv (improved-diffusion)
  bf16 = ldm.LatentUNet(widths=(4, 8), res_blocks=1, heads=2, dtype=jnp.bfloat16)
  assert jax.eval_shape(bf16.apply, variables, z, t, c).dtype == jnp.float32


@pytest.mark.slow
def test_small_denoiser_overfits_four_latents():
  """Eq. 14 on four fixed latents with their conditions: the denoising loss over 200 Adam steps
  falls below half its start (means of the first and last 20 steps, fresh t and noise)."""
  key = jax.random.PRNGKey(0)
  z0 = jax.random.normal(key, (4, 8, 8, 4))
  cond = z0 + 0.3 * jax.random.normal(jax.random.PRNGKey(1), z0.shape)  # a noisy condition
  net = ldm.LatentUNet(widths=(16, 32), res_blocks=1, heads=2)
  params = net.init(key, z0, jnp.zeros((4,), jnp.int32), cond)['params']
  ac = jnp.asarray(ldm.cosine_alphas_cumprod(T), jnp.float32)
  tx = optax.adam(2e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, k):
    z_t, t, target = ldm_losses.noised_example(z0, k, ac, 'v')
    loss, grad = jax.value_and_grad(lambda p: ldm_losses.denoising_loss(
        net.apply({'params': p}, z_t, t, cond), target))(params)
    updates, opt = tx.update(grad, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  losses = []
  for i in range(200):
    params, opt, loss = step(params, opt, jax.random.fold_in(key, i))
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]), (losses[:5], losses[-5:])
