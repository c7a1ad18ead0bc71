"""Networks and losses of Wan et al. 2020 (pikfix_jax/models/wan.py, losses/wan.py): shapes at odd
sizes, the partial nonlocal block's masking (eqs. 7-10), gradients, and every loss against
NumPy (docs/MODEL.md, "Wan et al. 2020: networks")."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pikfix_jax.models import wan
from pikfix_jax.losses import common
from pikfix_jax.losses import wan as wan_losses
from pikfix_jax.models.discriminator import PatchDiscriminator
from pikfix_jax.ops import color

KEY = jax.random.PRNGKey(0)


def _uniform(seed: int, shape: tuple, low: float = 0.0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _tiny_vae() -> wan.VAE:
  return wan.VAE(features=8, n_downsample=2, n_res=1)


def _tiny_mapping(**kw) -> wan.MappingNetwork:
  return wan.MappingNetwork(widths_in=(8, 16), n_res=1, widths_out=(8,), global_res=1, **kw)


# Shapes


@pytest.mark.slow
@pytest.mark.parametrize('hw, latent', [((36, 52), (9, 13)), ((37, 50), (10, 13))])
def test_vae_shapes_and_range(hw, latent):
  vae = _tiny_vae()
  x = jnp.asarray(_uniform(0, (2,) + hw + (1,)))
  variables = vae.init({'params': KEY, 'noise': KEY}, x, train=True)
  out = vae.apply(variables, x, train=True, rng=jax.random.PRNGKey(1))
  assert out['mu'].shape == (2,) + latent + (8,)
  assert out['recon'].shape == x.shape
  assert float(out['recon'].min()) >= 0.0 and float(out['recon'].max()) <= 1.0
  assert not np.allclose(out['z'], out['mu'])  # training decodes mu + N(0, I)
  eval_out = vae.apply(variables, x)
  np.testing.assert_array_equal(eval_out['z'], eval_out['mu'])
  mu, logvar = vae.apply(variables, x, method='encode')
  assert logvar is None
  np.testing.assert_array_equal(mu, eval_out['mu'])
  decoded = vae.apply(variables, mu, method='decode')
  assert decoded.shape == (2, latent[0] * 4, latent[1] * 4, 1)

@pytest.mark.slow

def test_mapping_shapes_with_image_or_latent_mask():
  z = jnp.asarray(_uniform(0, (2, 9, 13, 8), -1.0))
  mask = jnp.asarray(_uniform(1, (2, 36, 52, 1)) > 0.9, jnp.float32)
  mapping = _tiny_mapping()
  variables = mapping.init(KEY, z, mask)
  out = mapping.apply(variables, z, mask)
  assert out.shape == z.shape
  small = wan.latent_mask(mask, (9, 13), 4)
  np.testing.assert_array_equal(mapping.apply(variables, z, small), out)
  weights = mapping.apply(variables, z, mask, method='attention_weights')
  assert weights.shape == (2, 9 * 13, 9 * 13)


@pytest.mark.slow
@pytest.mark.parametrize('hw', [(36, 52), (37, 51)])
def test_scratch_detector_shapes(hw):
  det = wan.ScratchDetector(base_features=4, depth=2)
  x = jnp.asarray(_uniform(0, (2,) + hw + (1,)))
  variables = det.init(KEY, x)
  logits, updates = det.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == x.shape
  assert 'batch_stats' in updates
  assert det.apply(variables, x).shape == x.shape
  inst = wan.ScratchDetector(base_features=4, depth=2, norm='instance')
  assert inst.apply(inst.init(KEY, x), x).shape == x.shape

@pytest.mark.slow

def test_discriminator_shapes():
  z = jnp.asarray(_uniform(0, (2, 9, 13, 8), -1.0))
  latent_d = wan.LatentDiscriminator(features=8)
  logits = latent_d.apply(latent_d.init(KEY, z), z)
  assert logits.ndim == 4 and logits.shape[0] == 2 and logits.shape[-1] == 1
  assert min(logits.shape[1:3]) >= 1
  x = jnp.asarray(_uniform(1, (2, 36, 52, 1)))
  d = wan.MultiscaleDiscriminator(num_d=2, features=8)
  outputs = d.apply(d.init(KEY, x), x)
  assert len(outputs) == 2
  for logits, features in outputs:
    assert logits.shape[-1] == 1 and len(features) == 4  # num_layers + 1 LeakyReLU outputs
  assert outputs[1][0].shape[1] < outputs[0][0].shape[1]
  conditional = d.apply(d.init(KEY, x, x), x, x)
  assert conditional[0][0].shape == outputs[0][0].shape

@pytest.mark.slow

def test_patch_discriminator_return_features_same_logits_and_params():
  l, ab = jnp.asarray(_uniform(0, (2, 32, 32, 1))), jnp.asarray(_uniform(1, (2, 32, 32, 2)))
  plain = PatchDiscriminator(features=8)
  with_features = PatchDiscriminator(features=8, return_features=True)
  variables = plain.init(KEY, l, ab)
  assert jax.tree.structure(variables) == jax.tree.structure(with_features.init(KEY, l, ab))
  logits, features = with_features.apply(variables, l, ab)
  np.testing.assert_array_equal(logits, plain.apply(variables, l, ab))
  assert [f.shape[-1] for f in features] == [8, 16, 32, 64]


# Mask handling and the partial nonlocal block


def test_latent_mask_marks_any_scratched_pixel():
  mask = np.zeros((1, 10, 9, 1), np.float32)
  mask[0, 5, 4] = 1.0  # cell (1, 1) of the 4x4 tiles
  mask[0, 9, 8] = 1.0  # the last row/column, reached through reflect padding (-> 12 x 12)
  got = np.asarray(wan.latent_mask(jnp.asarray(mask), (3, 3), 4))[0, :, :, 0]
  want = np.zeros((3, 3), np.float32)
  want[1, 1] = want[2, 2] = 1.0
  np.testing.assert_array_equal(got, want)


def test_masked_softmax_exact_zeros_and_all_masked_row():
  logits = jnp.asarray(_uniform(0, (2, 3, 5), -4.0) * 30.0)
  keep = jnp.asarray([[[True, False, True, False, True]], [[False] * 5]])
  w = np.asarray(wan.masked_softmax(logits, keep))
  assert np.all(w[0][:, [1, 3]] == 0.0)
  np.testing.assert_allclose(w[0].sum(-1), 1.0, rtol=1e-6)
  want = np.exp(np.asarray(logits)[0][:, [0, 2, 4]])
  np.testing.assert_allclose(w[0][:, [0, 2, 4]], want / want.sum(-1, keepdims=True), rtol=1e-5)
  np.testing.assert_array_equal(w[1], 0.0)  # nothing to attend to: all weights 0
  grad = jax.grad(lambda t: jnp.sum(wan.masked_softmax(t, keep) * jnp.arange(5.0)))(logits)
  assert np.all(np.isfinite(grad))


def _block_inputs(seed: int = 0):
  f = _uniform(seed, (2, 6, 7, 8), -1.0)
  m = (_uniform(seed + 1, (2, 6, 7, 1)) > 0.65).astype(np.float32)
  assert 0 < m.sum() < m.size
  return f, m


def test_partial_nonlocal_ignores_masked_positions_exactly():
  """Eq. 7: a query at an intact position weighs only intact keys; changing F at the defect
  positions leaves its weights (bitwise), O_i (eq. 9) and the fused output (eq. 10, rho_local
  the identity: F itself) unchanged."""
  f, m = _block_inputs()
  block = wan.PartialNonLocalBlock(global_res=1)
  variables = block.init(KEY, jnp.asarray(f), jnp.asarray(m))
  noise = _uniform(9, f.shape, -1.0) * 5.0
  f2 = np.where(m > 0.5, noise, f)
  run = lambda x: block.apply(variables, jnp.asarray(x), jnp.asarray(m), return_intermediates=True)
  (fused1, i1), (fused2, i2) = run(f), run(f2)
  intact = m.reshape(2, -1) < 0.5  # (B, hw): queries / keys at intact positions
  w1, w2 = np.asarray(i1['weights']), np.asarray(i2['weights'])
  for b in range(2):
    np.testing.assert_array_equal(w1[b][intact[b]], w2[b][intact[b]])
    assert np.all(w1[b][:, ~intact[b]] == 0.0) and np.all(w2[b][:, ~intact[b]] == 0.0)
    np.testing.assert_allclose(w1[b].sum(-1), 1.0, rtol=1e-5)
    # not vacuous: the defect queries' weights do move
    assert not np.allclose(w1[b][~intact[b]], w2[b][~intact[b]])
  o1 = np.asarray(i1['nonlocal']).reshape(2, -1, 8)
  o2 = np.asarray(i2['nonlocal']).reshape(2, -1, 8)
  np.testing.assert_allclose(o1[intact], o2[intact], rtol=0, atol=1e-6)
  keep = np.broadcast_to(m < 0.5, f.shape)
  np.testing.assert_array_equal(np.asarray(fused1)[keep], f[keep])
  np.testing.assert_array_equal(np.asarray(fused2)[keep], f[keep])
  # defect positions take the global branch's output
  glob = np.asarray(i1['global'])
  np.testing.assert_array_equal(np.asarray(fused1)[~keep], glob[~keep])


def test_partial_nonlocal_matches_numpy():
  """Eqs. 7-9 in NumPy from the block's 1x1 conv parameters."""
  f, m = _block_inputs(3)
  block = wan.PartialNonLocalBlock(global_res=0)
  variables = block.init(KEY, jnp.asarray(f), jnp.asarray(m))
  fused, inter = block.apply(variables, jnp.asarray(f), jnp.asarray(m), return_intermediates=True)
  p = jax.tree.map(lambda t: np.asarray(t, np.float64), variables['params'])
  proj = lambda name, x: x @ p[name]['kernel'][0, 0] + p[name]['bias']
  x = f.reshape(2, -1, 8).astype(np.float64)
  mm = m.reshape(2, 1, -1).astype(np.float64)
  fij = np.exp(np.einsum('bic,bjc->bij', proj('theta', x), proj('phi', x)))
  s = (1 - mm) * fij / np.sum((1 - mm) * fij, axis=-1, keepdims=True)
  o = proj('W', np.einsum('bij,bjc->bic', s, proj('g', x)))
  np.testing.assert_allclose(inter['weights'], s, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.asarray(inter['nonlocal']).reshape(2, -1, 8), o, rtol=1e-4,
                             atol=1e-5)
  want = (1 - m.reshape(2, -1, 1)) * x + m.reshape(2, -1, 1) * o  # eq. 10, both rho identity
  np.testing.assert_allclose(np.asarray(fused).reshape(2, -1, 8), want, rtol=1e-4, atol=1e-5)

@pytest.mark.slow

def test_partial_nonlocal_all_masked_and_no_mask():
  f, _ = _block_inputs()
  block = wan.PartialNonLocalBlock(global_res=1)
  ones = jnp.ones(f.shape[:3] + (1,))
  variables = block.init(KEY, jnp.asarray(f), ones)

  def loss(params, mask):
    return jnp.sum(block.apply({'params': params}, jnp.asarray(f), mask) ** 2)

  for mask in (ones, jnp.zeros_like(ones)):
    value, grads = jax.value_and_grad(loss)(variables['params'], mask)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  _, inter = block.apply(variables, jnp.asarray(f), ones, return_intermediates=True)
  np.testing.assert_array_equal(inter['weights'], 0.0)  # no intact key anywhere
  # no defect: the block is the identity (F_fuse = rho_local(F) = F)
  np.testing.assert_array_equal(block.apply(variables, jnp.asarray(f), jnp.zeros_like(ones)), f)


def test_blur_downsample_matches_numpy():
  x = _uniform(0, (1, 6, 7, 2))
  a = np.array([1.0, 2.0, 1.0])
  k = np.outer(a, a) / 16.0
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  want = np.zeros((1, 3, 4, 2), np.float32)
  for i in range(3):
    for j in range(4):
      want[0, i, j] = np.einsum('hwc,hw->c', xp[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3], k)
  np.testing.assert_allclose(wan.blur_downsample(jnp.asarray(x)), want, rtol=1e-6, atol=1e-6)


# Gradients

@pytest.mark.slow

def test_latent_generator_loss_reaches_every_encoder_parameter():
  """Eq. 4: E_{R,X} is trained against D_{R,X}; the generator-side latent loss has a nonzero
  gradient for every encoder parameter and none for the decoder's."""
  vae, latent_d = _tiny_vae(), wan.LatentDiscriminator(features=8)
  r = jnp.asarray(_uniform(0, (2, 36, 52, 1)))
  vae_vars = vae.init({'params': KEY, 'noise': KEY}, r)
  d_vars = latent_d.init(KEY, jnp.zeros((2, 9, 13, 8)))

  def loss(params):
    mu, _ = vae.apply({'params': params}, r, method='encode')
    return wan_losses.latent_generator_loss(latent_d.apply(d_vars, mu))

  grads = jax.jit(jax.grad(loss))(vae_vars['params'])
  flat = flax.traverse_util.flatten_dict(grads, sep='/')
  enc = {k: g for k, g in flat.items() if k.startswith('encoder/')}
  assert enc and all(np.any(np.asarray(g) != 0) for g in enc.values()), [
      k for k, g in enc.items() if not np.any(np.asarray(g))]
  assert all(not np.any(np.asarray(g)) for k, g in flat.items() if k.startswith('decoder/'))

@pytest.mark.slow

def test_mapping_gradient_reaches_every_parameter():
  z = jnp.asarray(_uniform(0, (2, 9, 13, 8), -1.0))
  mask = jnp.asarray(_uniform(1, (2, 9, 13, 1)) > 0.7, jnp.float32)
  mapping = _tiny_mapping()
  variables = mapping.init(KEY, z, mask)
  target = jnp.asarray(_uniform(2, z.shape, -1.0))
  grads = jax.grad(lambda p: common.l1(mapping.apply({'params': p}, z, mask), target))(
      variables['params'])
  flat = flax.traverse_util.flatten_dict(grads, sep='/')
  zero = [k for k, g in flat.items() if not np.any(np.asarray(g))]
  assert not zero, zero


# Losses against NumPy


def test_kl_divergence():
  assert float(wan_losses.kl_divergence(jnp.zeros((2, 3, 3, 4)))) == 0.0
  assert float(wan_losses.kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 3)))) == 0.0
  mu, logvar = _uniform(0, (2, 3, 3, 4), -1.0), _uniform(1, (2, 3, 3, 4), -1.0)
  np.testing.assert_allclose(wan_losses.kl_divergence(mu), np.mean(mu ** 2), rtol=1e-6)
  want = np.mean(0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar))
  np.testing.assert_allclose(wan_losses.kl_divergence(mu, logvar), want, rtol=1e-6)


def test_lsgan_losses():
  real, fake = _uniform(0, (2, 4, 5, 1), -1.0), _uniform(1, (2, 4, 5, 1), -1.0)
  real2, fake2 = _uniform(2, (2, 2, 3, 1), -1.0), _uniform(3, (2, 2, 3, 1), -1.0)
  np.testing.assert_allclose(wan_losses.lsgan_discriminator_loss(real, fake),
                             np.mean((real - 1) ** 2) + np.mean(fake ** 2), rtol=1e-6)
  np.testing.assert_allclose(wan_losses.lsgan_generator_loss(fake), np.mean((fake - 1) ** 2),
                             rtol=1e-6)
  # multi-scale outputs [(logits, features), ...]: summed over scales
  ms_real, ms_fake = [(real, ()), (real2, ())], [(fake, ()), (fake2, ())]
  np.testing.assert_allclose(
      wan_losses.lsgan_discriminator_loss(ms_real, ms_fake),
      np.mean((real - 1) ** 2) + np.mean(fake ** 2) + np.mean((real2 - 1) ** 2)
      + np.mean(fake2 ** 2), rtol=1e-6)
  np.testing.assert_allclose(wan_losses.latent_discriminator_loss(real, fake),
                             np.mean((1 - real) ** 2) + np.mean(fake ** 2), rtol=1e-6)
  np.testing.assert_allclose(wan_losses.latent_generator_loss(real), np.mean(real ** 2),
                             rtol=1e-6)


def test_feature_matching_loss():
  shapes = [(2, 4, 4, 3), (2, 2, 2, 5)]
  fake = [(None, tuple(_uniform(10 * s + i, sh) for i, sh in enumerate(shapes))) for s in (0, 1)]
  real = [(None, tuple(_uniform(100 + 10 * s + i, sh) for i, sh in enumerate(shapes)))
          for s in (0, 1)]
  want = sum(0.5 * (4.0 / 2) * np.mean(np.abs(f - r))
             for (_, fs), (_, rs) in zip(fake, real) for f, r in zip(fs, rs))
  np.testing.assert_allclose(wan_losses.feature_matching_loss(fake, real), want, rtol=1e-6)


def test_vgg_feature_matching_loss_with_a_stand_in_network():
  def features(rgb):  # stand-in for VGG-19: any layer-keyed features of the RGB input
    return {name: rgb[..., :1] * (i + 1) + rgb[..., 1:2] ** 2
            for i, name in enumerate(wan_losses.VGG_LAYERS)}
  out, target = _uniform(0, (2, 8, 8, 1)), _uniform(1, (2, 8, 8, 1))
  fo = features(np.asarray(color.gray_to_rgb(jnp.asarray(out))))
  ft = features(np.asarray(color.gray_to_rgb(jnp.asarray(target))))
  want = sum(w * np.mean(np.abs(fo[n] - ft[n]))
             for w, n in zip(wan_losses.VGG_LAYER_WEIGHTS, wan_losses.VGG_LAYERS))
  np.testing.assert_allclose(wan_losses.vgg_feature_matching_loss(features, out, target), want,
                             rtol=1e-5)


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))

@pytest.mark.slow

def test_detection_losses():
  logits = _uniform(0, (2, 6, 5, 1), -1.0) * 4.0
  target = (_uniform(1, (2, 6, 5, 1)) > 0.8).astype(np.float32)
  y = _np_sigmoid(logits)
  pos_frac = target.mean(axis=(1, 2, 3), keepdims=True)

  def np_bce(alpha):
    return np.mean(-alpha * target * np.log(y) - (1 - alpha) * (1 - target) * np.log(1 - y))

  np.testing.assert_allclose(wan_losses.weighted_bce(logits, target), np_bce(1 - pos_frac),
                             rtol=1e-5)
  np.testing.assert_allclose(
      wan_losses.weighted_bce(logits, target, wan_losses.positive_fraction(target)),
      np_bce(pos_frac), rtol=1e-5)
  np.testing.assert_allclose(wan_losses.weighted_bce(logits, target, 0.5), np_bce(0.5),
                             rtol=1e-5)
  p = np.where(target == 1, y, 1 - y)
  focal = np.mean(-(1 - p) ** 0.2 * np.log(p))
  np.testing.assert_allclose(wan_losses.focal_loss(logits, target), focal, rtol=1e-5)
  np.testing.assert_allclose(wan_losses.detection_loss(logits, target),
                             np_bce(1 - pos_frac) + 10.0 * focal, rtol=1e-5)
  # confident, correct logits: finite gradients ((1 - p)^0.2 has an infinite slope at p = 1)
  sure = jnp.where(jnp.asarray(target) > 0.5, 200.0, -200.0)
  grad = jax.grad(lambda t: wan_losses.detection_loss(t, target))(sure)
  assert np.all(np.isfinite(grad))


def test_l1_and_constants():
  a, b = _uniform(0, (2, 3, 3, 1)), _uniform(1, (2, 3, 3, 1))
  np.testing.assert_allclose(common.l1(a, b), np.mean(np.abs(a - b)), rtol=1e-6)
  assert (wan_losses.RECON_WEIGHT, wan_losses.LATENT_L1_WEIGHT,
          wan_losses.FEATURE_MATCHING_WEIGHT) == (10.0, 60.0, 10.0)
  assert (wan_losses.FOCAL_GAMMA, wan_losses.FOCAL_WEIGHT) == (0.2, 10.0)


# Paper-size parameter counts (shapes only: jax.eval_shape, nothing computed)


def test_paper_size_parameter_counts():
  x, m, z = jnp.zeros((1, 256, 256, 1)), jnp.zeros((1, 256, 256, 1)), jnp.zeros((1, 64, 64, 64))
  count = lambda module, *args: _count(jax.eval_shape(lambda: module.init(KEY, *args))['params'])
  assert count(wan.VAE(), x) == 859_585
  assert count(wan.LatentDiscriminator(), z) == 2_827_201
  assert count(wan.MultiscaleDiscriminator(), x) == 5_527_170
  assert count(wan.MappingNetwork(), z, m) == 41_684_160
  assert count(wan.ScratchDetector(), x) == 37_626_177
