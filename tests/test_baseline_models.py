"""The comparison baselines' networks and losses: pix2pix (Isola et al. 2017) and CMS4CV
(Carboniero, Mancinelli, Sacerdote 2024), checked against hand-written torch transcriptions
(tests/torch_reference.py) and NumPy (docs/MODEL.md, "Baselines: Pix2pix and CMS4CV")."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pikfix_jax import metrics
from pikfix_jax.models import cms4cv
from pikfix_jax.models import pix2pix
from pikfix_jax.models.discriminator import PatchDiscriminator
import torch_reference as ref

TOL = 1e-5


def _uniform(seed: int, shape: tuple, low: float = 0.0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _assert_same_tree(variables, reference):
  """`variables` (from a torch module's to_flax) has exactly the init's names and shapes."""
  shapes = lambda t: jax.tree.map(lambda x: tuple(np.shape(x)), flax.core.unfreeze(t))
  assert shapes(variables) == shapes(reference)


def _assert_every_gradient_nonzero(grads, what: str):
  flat = flax.traverse_util.flatten_dict(grads, sep='/')
  zero = [name for name, g in flat.items() if not np.any(np.asarray(g))]
  assert not zero, f'{what}: no gradient reaches {zero}'


def _torch_count(module_fn) -> int:
  with torch.device('meta'):  # shapes only, nothing allocated
    return sum(p.numel() for p in module_fn().parameters())


# Pix2pix


@pytest.mark.slow
@pytest.mark.parametrize('hw', [(8, 8), (5, 7)])
def test_conv_transpose_stride2_matches_torch_conv_transpose(hw):
  """ConvTranspose2d(k=4, s=2, p=1) computed as a 2x2 conv + depth-to-space: torch's values
  and gradients, with torch's weight permuted (2, 3, 0, 1), unflipped."""
  torch.manual_seed(0)
  layer = torch.nn.ConvTranspose2d(5, 3, 4, 2, 1)
  x = _uniform(0, (2,) + hw + (5,), low=-1.0)
  cotangent = _uniform(1, (2, 2 * hw[0], 2 * hw[1], 3), low=-1.0)
  params = ref._conv_transpose_to_flax(layer)
  module = pix2pix.ConvTransposeStride2(3)
  out, vjp = jax.vjp(lambda p, x: module.apply({'params': p}, x), params, jnp.asarray(x))
  grad_params, grad_x = vjp(jnp.asarray(cotangent))
  x_torch = ref.to_nchw(x).requires_grad_()
  expected = layer(x_torch)
  expected.backward(ref.to_nchw(cotangent))
  assert out.shape == (2, 2 * hw[0], 2 * hw[1], 3)
  np.testing.assert_allclose(out, ref.to_nhwc(expected), atol=TOL, rtol=0)
  np.testing.assert_allclose(grad_x, ref.to_nhwc(x_torch.grad), atol=TOL, rtol=0)
  np.testing.assert_allclose(grad_params['kernel'],
                             layer.weight.grad.numpy().transpose(2, 3, 0, 1), atol=1e-4, rtol=0)
  np.testing.assert_allclose(grad_params['bias'], layer.bias.grad.numpy(), atol=1e-4, rtol=0)


def test_unet_generator_matches_junyanz_unet_in_eval_mode():
  """6 downs (one dropout layer), 64 px: the 1x1 bottleneck of U-Net-256 at a small size."""
  torch_g = ref.randomize(ref.UnetGenerator(1, 3, num_downs=6, ngf=4, use_dropout=True), 1)
  model = pix2pix.UnetGenerator(num_downs=6, ngf=4)
  l = _uniform(1, (2, 64, 64, 1))
  variables = torch_g.to_flax()
  _assert_same_tree(variables, jax.eval_shape(model.init, jax.random.PRNGKey(0), l))
  out = jax.jit(model.apply)(variables, jnp.asarray(l))
  with torch.no_grad():
    expected = ref.to_nhwc(torch_g(ref.to_nchw(2 * l - 1)))  # pix2pix's inputs: [-1, 1]
  np.testing.assert_allclose(out, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize('train', [False, True])
def test_patch_discriminator_matches_junyanz_nlayer_discriminator(train):
  """norm='batch' is NLayerDiscriminator(n_layers=3, BatchNorm) on [L, output]; train=True
  normalises with the batch's statistics, as torch's train mode."""
  torch_d = ref.randomize(ref.NLayerDiscriminator(4, ndf=8, n_layers=3), 2)
  torch_d.train(train)
  d = pix2pix.make_discriminator(features=8)
  l, out = _uniform(2, (2, 48, 40, 1)), _uniform(3, (2, 48, 40, 3), low=-1.0)
  variables = torch_d.to_flax()
  _assert_same_tree(variables, jax.eval_shape(d.init, jax.random.PRNGKey(0), l, out))
  logits, _ = d.apply(variables, l, out, train=train, mutable=['batch_stats'])
  with torch.no_grad():
    expected = ref.to_nhwc(torch_d(ref.to_nchw(np.concatenate([l, out], axis=-1))))
  # batch statistics divide by small batch deviations: relative float32 rounding on top
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=1e-5 if train else 0)


def test_default_patch_discriminator_keeps_pik_fix_variables():
  """Pik-Fix's D (instance norm, flax init) keeps its variable names: no BatchNorm state."""
  shapes = jax.eval_shape(PatchDiscriminator(features=8).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 1)), jnp.zeros((1, 32, 32, 2)))
  assert set(shapes) == {'params'}
  assert sorted(shapes['params']) == ['Conv_0', 'Conv_1', 'Conv_2', 'Conv_3', 'Conv_4',
                                      'GroupNorm_0', 'GroupNorm_1', 'GroupNorm_2']
  with pytest.raises(ValueError, match='norm'):
    PatchDiscriminator(norm='group').init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)),
                                          jnp.zeros((1, 32, 32, 2)))


@pytest.mark.slow
@pytest.mark.parametrize('hw', [(64, 64), (72, 50)])
def test_pix2pix_generator_any_size_in_tanh_range(hw):
  """U-Net-256 (8 downs, tiny widths): any size is padded to 256 and cropped back."""
  model = pix2pix.UnetGenerator(num_downs=8, ngf=4)
  l = jnp.asarray(_uniform(4, (2,) + hw + (1,)))
  variables = model.init(jax.random.PRNGKey(0), l[:1])
  out = jax.jit(model.apply)(variables, l)
  assert out.shape == (2,) + hw + (3,) and out.dtype == jnp.float32
  assert float(jnp.min(out)) >= -1.0 and float(jnp.max(out)) <= 1.0
  train_apply = jax.jit(lambda v, l, key: model.apply(
      v, l, train=True, rngs={'dropout': key}, mutable=['batch_stats']))
  train_out, updates = train_apply(variables, l, jax.random.PRNGKey(1))
  assert train_out.shape == out.shape and set(updates) == {'batch_stats'}
  other_dropout, _ = train_apply(variables, l, jax.random.PRNGKey(2))
  assert not np.allclose(train_out, other_dropout)  # dropout is on in training
  l_out, ab_out = pix2pix.to_lab(out)
  assert float(jnp.min(l_out)) >= 0.0 and float(jnp.max(l_out)) <= 1.0
  np.testing.assert_allclose(pix2pix.to_target(l_out, ab_out), out, atol=1e-6)


def test_pix2pix_full_size_parameter_counts():
  """U-Net-256 with ngf=64 and the 70x70 PatchGAN: junyanz's counts for 1 input channel
  (54.41 M and 2.77 M; with 3 input channels junyanz prints 54.414 M and 2.769 M)."""
  g = jax.eval_shape(pix2pix.UnetGenerator().init, jax.random.PRNGKey(0),
                     jnp.zeros((1, 256, 256, 1)))['params']
  d = jax.eval_shape(pix2pix.make_discriminator().init, jax.random.PRNGKey(0),
                     jnp.zeros((1, 256, 256, 1)), jnp.zeros((1, 256, 256, 3)))['params']
  assert _count(g) == _torch_count(lambda: ref.UnetGenerator(1, 3, 8, 64, True)) == 54_411_907
  assert _count(d) == _torch_count(lambda: ref.NLayerDiscriminator(4, 64, 3)) == 2_766_657


@pytest.mark.slow
def test_pix2pix_gradients_reach_every_parameter():
  """G's loss (through D, BatchNorm on batch statistics, dropout on) reaches every G
  parameter; D's loss every D parameter."""
  g = pix2pix.UnetGenerator(num_downs=6, ngf=4)
  d = pix2pix.make_discriminator(features=4)
  l = jnp.asarray(_uniform(5, (2, 64, 64, 1)))
  target = pix2pix.to_target(l, jnp.asarray(_uniform(6, (2, 64, 64, 2), low=-1.0)))
  g_vars = g.init(jax.random.PRNGKey(0), l)
  d_vars = d.init(jax.random.PRNGKey(1), l, target)
  assert _count(g_vars['batch_stats']) and _count(d_vars['batch_stats'])

  def apply_g(g_params):
    return g.apply({**g_vars, 'params': g_params}, l, train=True,
                   rngs={'dropout': jax.random.PRNGKey(2)}, mutable=['batch_stats'])[0]

  def apply_d(d_params, y):
    return d.apply({**d_vars, 'params': d_params}, l, y, train=True,
                   mutable=['batch_stats'])[0]

  def g_loss(g_params):
    fake = apply_g(g_params)
    return pix2pix.generator_loss(apply_d(d_vars['params'], fake), fake, target)['total']

  def d_loss(d_params):
    fake = jax.lax.stop_gradient(apply_g(g_vars['params']))
    return pix2pix.discriminator_loss(apply_d(d_params, target), apply_d(d_params, fake))

  g_grads, d_grads = jax.jit(lambda: (jax.grad(g_loss)(g_vars['params']),
                                      jax.grad(d_loss)(d_vars['params'])))()
  _assert_every_gradient_nonzero(g_grads, 'pix2pix G')
  _assert_every_gradient_nonzero(d_grads, 'pix2pix D')


def test_pix2pix_losses_equal_torch():
  real, fake = _uniform(7, (2, 6, 6, 1), -3.0) * 3, _uniform(8, (2, 6, 6, 1), -3.0) * 3
  output, target = _uniform(9, (2, 8, 8, 3), -1.0), _uniform(10, (2, 8, 8, 3), -1.0)
  bce = torch.nn.BCEWithLogitsLoss()
  t = torch.from_numpy
  d_expected = 0.5 * (bce(t(real), torch.ones(real.shape)) + bce(t(fake), torch.zeros(fake.shape)))
  adv = bce(t(fake), torch.ones(fake.shape))
  l1 = torch.nn.L1Loss()(t(output), t(target))
  np.testing.assert_allclose(pix2pix.discriminator_loss(real, fake), d_expected.item(), rtol=1e-6)
  terms = pix2pix.generator_loss(fake, output, target)
  np.testing.assert_allclose(terms['adversarial'], adv.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['l1'], l1.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['total'], (adv + 100 * l1).item(), rtol=1e-6)


# CMS4CV


@pytest.mark.parametrize('sr_factor,upsampling', [(2, 'nearest'), (1, 'nearest'),
                                                  (2, 'bilinear')])
def test_cms4cv_unet_matches_torch_in_eval_mode(sr_factor, upsampling):
  """3 levels, base width 4, grey + 1 segmentation channel (Fusion's input layout)."""
  torch_u = ref.randomize(ref.CMS4CVUNet(2, 3, 4, sr_factor, upsampling), 3)
  model = cms4cv.UNet(num_down=3, base_features=4, sr_factor=sr_factor, upsampling=upsampling)
  x = _uniform(11, (2, 32, 24, 2))
  variables = torch_u.to_flax()
  _assert_same_tree(variables, jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
  out = jax.jit(model.apply)(variables, jnp.asarray(x))
  with torch.no_grad():
    expected = ref.to_nhwc(torch_u(ref.to_nchw(x)))
  assert out.shape == (2, 32 * sr_factor, 24 * sr_factor, 3)
  np.testing.assert_allclose(out, expected, atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize('hw', [(32, 32), (30, 22)])
def test_cms4cv_discriminator_matches_torch_in_eval_mode(hw):
  """Odd intermediate sizes take TF's asymmetric 'same' padding."""
  torch_d = ref.randomize(ref.CMS4CVDiscriminator(3, 4, 4, *hw), 4)
  d = cms4cv.Discriminator(features=4)
  rgb = _uniform(12, (2,) + hw + (3,))
  variables = torch_d.to_flax()
  _assert_same_tree(variables, jax.eval_shape(d.init, jax.random.PRNGKey(0), rgb))
  logits = d.apply(variables, jnp.asarray(rgb))
  with torch.no_grad():
    expected = torch_d(ref.to_nchw(rgb)).numpy()
  assert logits.shape == (2, 1)
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize('hw', [(64, 64), (72, 50)])
@pytest.mark.parametrize('sr_factor', [1, 2])
def test_cms4cv_unet_any_size_in_sigmoid_range(hw, sr_factor):
  model = cms4cv.UNet(base_features=4, sr_factor=sr_factor)  # 5 levels: pads to 32
  x = jnp.asarray(_uniform(13, (2,) + hw + (1,)))
  variables = model.init(jax.random.PRNGKey(0), x[:1])
  out = jax.jit(model.apply)(variables, x)
  assert out.shape == (2, sr_factor * hw[0], sr_factor * hw[1], 3)
  assert float(jnp.min(out)) >= 0.0 and float(jnp.max(out)) <= 1.0


def test_cms4cv_widths_and_parameter_counts():
  """base_features None puts the report's 1024 channels at the bottleneck for the U-Net
  (5 levels, 32..512) and Fusion (4 levels, 64..512)."""
  expected = {(5, 2): 28_312_835, (5, 1): 28_303_555, (4, 2): 28_285_443, (4, 1): 28_248_451}
  for (num_down, sr_factor), count in expected.items():
    params = jax.eval_shape(cms4cv.UNet(num_down=num_down, sr_factor=sr_factor).init,
                            jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 1)))['params']
    base = params['down0_conv0']['conv']['kernel'].shape[-1]
    assert base == 1024 // 2 ** num_down
    assert params['bottleneck_conv1']['conv']['kernel'].shape[-1] == 1024
    assert _count(params) == count == _torch_count(
        lambda: ref.CMS4CVUNet(1, num_down, base, sr_factor))  # pylint: disable=cell-var-from-loop
  d = jax.eval_shape(cms4cv.Discriminator().init, jax.random.PRNGKey(0),
                     jnp.zeros((1, 256, 256, 3)))['params']
  assert _count(d) == _torch_count(lambda: ref.CMS4CVDiscriminator(3, 64, 4, 256, 256)) == 2_888_513
  for bad in ({'sr_factor': 3}, {'upsampling': 'bicubic'}):
    with pytest.raises(ValueError):
      cms4cv.UNet(**bad).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))


@pytest.mark.slow
def test_cms4cv_gradients_reach_every_parameter():
  """The U-Net's MAE + (1 - SSIM) and the GAN's G loss reach every U-Net parameter (BatchNorm
  on batch statistics); D's BCE every D parameter."""
  g = cms4cv.UNet(num_down=3, base_features=4, sr_factor=2)
  d = cms4cv.Discriminator(features=4)
  grey = jnp.asarray(_uniform(14, (2, 32, 32, 1)))
  target = jnp.asarray(_uniform(15, (2, 64, 64, 3)))
  g_vars = g.init(jax.random.PRNGKey(0), grey)
  d_vars = d.init(jax.random.PRNGKey(1), target)

  def apply_g(g_params):
    return g.apply({**g_vars, 'params': g_params}, grey, train=True, mutable=['batch_stats'])[0]

  def apply_d(d_params, rgb):
    return d.apply({**d_vars, 'params': d_params}, rgb, train=True, mutable=['batch_stats'])[0]

  def gan_g_loss(g_params):
    fake = apply_g(g_params)
    return cms4cv.generator_loss(apply_d(d_vars['params'], fake), fake, target)['total']

  def d_loss(d_params):
    fake = jax.lax.stop_gradient(apply_g(g_vars['params']))
    return cms4cv.discriminator_loss(apply_d(d_params, target), apply_d(d_params, fake))

  unet_grads, gan_grads, d_grads = jax.jit(lambda: (
      jax.grad(lambda p: cms4cv.unet_loss(apply_g(p), target)['total'])(g_vars['params']),
      jax.grad(gan_g_loss)(g_vars['params']), jax.grad(d_loss)(d_vars['params'])))()
  _assert_every_gradient_nonzero(unet_grads, 'U-Net (MAE + SSIM)')
  _assert_every_gradient_nonzero(gan_grads, 'U-Net-GAN G')
  _assert_every_gradient_nonzero(d_grads, 'U-Net-GAN D')


def test_cms4cv_unet_loss_equals_numpy_mae_and_gaussian_ssim():
  """SSIM as tf.image.ssim: 11x11 Gaussian (sigma 1.5), valid positions, population
  statistics = skimage's gaussian_weights variant (metrics.ssim(gaussian=True))."""
  target = _uniform(16, (2, 24, 20, 3))
  output = np.clip(target + 0.2 * _uniform(17, target.shape, -1.0), 0, 1).astype(np.float32)
  terms = cms4cv.unet_loss(jnp.asarray(output), jnp.asarray(target))
  mae = np.mean(np.abs(output.astype(np.float64) - target))
  ssim = metrics.ssim(target, output, data_range=1.0, gaussian=True)
  np.testing.assert_allclose(cms4cv.ssim(output, target), ssim, rtol=1e-5)
  np.testing.assert_allclose(terms['mae'], mae, rtol=1e-5)
  np.testing.assert_allclose(terms['total'], mae + 1 - ssim.mean(), rtol=1e-5)
  np.testing.assert_allclose(cms4cv.unet_loss(jnp.asarray(target), jnp.asarray(target))['total'],
                             0.0, atol=1e-6)


def test_cms4cv_gan_losses_equal_torch():
  real, fake = _uniform(18, (4, 1), -3.0) * 3, _uniform(19, (4, 1), -3.0) * 3
  output, target = _uniform(20, (2, 8, 8, 3)), _uniform(21, (2, 8, 8, 3))
  bce = torch.nn.BCEWithLogitsLoss()
  t = torch.from_numpy
  d_expected = bce(t(real), torch.ones(real.shape)) + bce(t(fake), torch.zeros(fake.shape))
  adv = bce(t(fake), torch.ones(fake.shape))
  mae = torch.nn.L1Loss()(t(output), t(target))
  np.testing.assert_allclose(cms4cv.discriminator_loss(real, fake), d_expected.item(), rtol=1e-6)
  terms = cms4cv.generator_loss(fake, output, target)
  np.testing.assert_allclose(terms['adversarial'], adv.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['mae'], mae.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['total'], (adv + 150 * mae).item(), rtol=1e-6)
