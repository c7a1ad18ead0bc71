"""The CMS4CV networks (models/cms4cv.py; Carboniero, Mancinelli, Sacerdote 2024) against
hand-written torch transcriptions (tests/torch_reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pikfix_jax.losses import cms4cv as cms4cv_losses
from pikfix_jax.models import cms4cv
import torch_reference as ref
from tree_checks import assert_every_gradient_nonzero, assert_same_tree, count, uniform


TOL = 1e-5


@pytest.mark.parametrize('sr_factor,upsampling', [(2, 'nearest'), (1, 'nearest'),
                                                  (2, 'bilinear')])
def test_cms4cv_unet_matches_torch_in_eval_mode(sr_factor, upsampling):
  """3 levels, base width 4, grey + 1 segmentation channel (Fusion's input layout)."""
  torch_u = ref.randomize(ref.CMS4CVUNet(2, 3, 4, sr_factor, upsampling), 3)
  model = cms4cv.UNet(num_down=3, base_features=4, sr_factor=sr_factor, upsampling=upsampling)
  x = uniform(11, (2, 32, 24, 2))
  variables = torch_u.to_flax()
  assert_same_tree(variables, jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
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
  rgb = uniform(12, (2,) + hw + (3,))
  variables = torch_d.to_flax()
  assert_same_tree(variables, jax.eval_shape(d.init, jax.random.PRNGKey(0), rgb))
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
  x = jnp.asarray(uniform(13, (2,) + hw + (1,)))
  variables = model.init(jax.random.PRNGKey(0), x[:1])
  out = jax.jit(model.apply)(variables, x)
  assert out.shape == (2, sr_factor * hw[0], sr_factor * hw[1], 3)
  assert float(jnp.min(out)) >= 0.0 and float(jnp.max(out)) <= 1.0


def test_cms4cv_widths_and_parameter_counts():
  """base_features None puts the report's 1024 channels at the bottleneck for the U-Net
  (5 levels, 32..512) and Fusion (4 levels, 64..512)."""
  expected = {(5, 2): 28_312_835, (5, 1): 28_303_555, (4, 2): 28_285_443, (4, 1): 28_248_451}
  for (num_down, sr_factor), expected_count in expected.items():
    params = jax.eval_shape(cms4cv.UNet(num_down=num_down, sr_factor=sr_factor).init,
                            jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 1)))['params']
    base = params['down0_conv0']['conv']['kernel'].shape[-1]
    assert base == 1024 // 2 ** num_down
    assert params['bottleneck_conv1']['conv']['kernel'].shape[-1] == 1024
    assert count(params) == expected_count == ref.count_parameters(
        lambda: ref.CMS4CVUNet(1, num_down, base, sr_factor))  # pylint: disable=cell-var-from-loop
  d = jax.eval_shape(cms4cv.Discriminator().init, jax.random.PRNGKey(0),
                     jnp.zeros((1, 256, 256, 3)))['params']
  assert count(d) == ref.count_parameters(lambda: ref.CMS4CVDiscriminator(3, 64, 4, 256, 256)) == 2_888_513
  for bad in ({'sr_factor': 3}, {'upsampling': 'bicubic'}):
    with pytest.raises(ValueError):
      cms4cv.UNet(**bad).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))


@pytest.mark.slow
def test_cms4cv_gradients_reach_every_parameter():
  """The U-Net's MAE + (1 - SSIM) and the GAN's G loss reach every U-Net parameter (BatchNorm
  on batch statistics); D's BCE every D parameter."""
  g = cms4cv.UNet(num_down=3, base_features=4, sr_factor=2)
  d = cms4cv.Discriminator(features=4)
  grey = jnp.asarray(uniform(14, (2, 32, 32, 1)))
  target = jnp.asarray(uniform(15, (2, 64, 64, 3)))
  g_vars = g.init(jax.random.PRNGKey(0), grey)
  d_vars = d.init(jax.random.PRNGKey(1), target)

  def apply_g(g_params):
    return g.apply({**g_vars, 'params': g_params}, grey, train=True, mutable=['batch_stats'])[0]

  def apply_d(d_params, rgb):
    return d.apply({**d_vars, 'params': d_params}, rgb, train=True, mutable=['batch_stats'])[0]

  def gan_g_loss(g_params):
    fake = apply_g(g_params)
    return cms4cv_losses.generator_loss(apply_d(d_vars['params'], fake), fake, target)['total']

  def d_loss(d_params):
    fake = jax.lax.stop_gradient(apply_g(g_vars['params']))
    return cms4cv_losses.discriminator_loss(apply_d(d_params, target), apply_d(d_params, fake))

  unet_grads, gan_grads, d_grads = jax.jit(lambda: (
      jax.grad(lambda p: cms4cv_losses.unet_loss(apply_g(p), target)['total'])(g_vars['params']),
      jax.grad(gan_g_loss)(g_vars['params']), jax.grad(d_loss)(d_vars['params'])))()
  assert_every_gradient_nonzero(unet_grads, 'U-Net (MAE + SSIM)')
  assert_every_gradient_nonzero(gan_grads, 'U-Net-GAN G')
  assert_every_gradient_nonzero(d_grads, 'U-Net-GAN D')
