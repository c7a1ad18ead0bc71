"""Pix2pix's networks (models/pix2pix.py; Isola et al. 2017) and the stride-2 transposed
convolution (models/layers.py) against hand-written torch transcriptions (tests/torch_reference.py;
docs/MODEL.md, "Baselines: Pix2pix and CMS4CV")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pikfix_jax.losses import pix2pix as pix2pix_losses
from pikfix_jax.models import layers
from pikfix_jax.models import pix2pix
from pikfix_jax.models.discriminator import PatchDiscriminator
import torch_reference as ref
from tree_checks import assert_every_gradient_nonzero, assert_same_tree, count, uniform


TOL = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize('hw', [(8, 8), (5, 7)])
def test_conv_transpose_stride2_matches_torch_conv_transpose(hw):
  """ConvTranspose2d(k=4, s=2, p=1) computed as a 2x2 conv + depth-to-space: torch's values
  and gradients, with torch's weight permuted (2, 3, 0, 1), unflipped."""
  torch.manual_seed(0)
  layer = torch.nn.ConvTranspose2d(5, 3, 4, 2, 1)
  x = uniform(0, (2,) + hw + (5,), low=-1.0)
  cotangent = uniform(1, (2, 2 * hw[0], 2 * hw[1], 3), low=-1.0)
  params = ref._conv_transpose_to_flax(layer)
  module = layers.ConvTransposeStride2(3)
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
  l = uniform(1, (2, 64, 64, 1))
  variables = torch_g.to_flax()
  assert_same_tree(variables, jax.eval_shape(model.init, jax.random.PRNGKey(0), l))
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
  l, out = uniform(2, (2, 48, 40, 1)), uniform(3, (2, 48, 40, 3), low=-1.0)
  variables = torch_d.to_flax()
  assert_same_tree(variables, jax.eval_shape(d.init, jax.random.PRNGKey(0), l, out))
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
  l = jnp.asarray(uniform(4, (2,) + hw + (1,)))
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
  assert count(g) == ref.count_parameters(lambda: ref.UnetGenerator(1, 3, 8, 64, True)) == 54_411_907
  assert count(d) == ref.count_parameters(lambda: ref.NLayerDiscriminator(4, 64, 3)) == 2_766_657


@pytest.mark.slow
def test_pix2pix_gradients_reach_every_parameter():
  """G's loss (through D, BatchNorm on batch statistics, dropout on) reaches every G
  parameter; D's loss every D parameter."""
  g = pix2pix.UnetGenerator(num_downs=6, ngf=4)
  d = pix2pix.make_discriminator(features=4)
  l = jnp.asarray(uniform(5, (2, 64, 64, 1)))
  target = pix2pix.to_target(l, jnp.asarray(uniform(6, (2, 64, 64, 2), low=-1.0)))
  g_vars = g.init(jax.random.PRNGKey(0), l)
  d_vars = d.init(jax.random.PRNGKey(1), l, target)
  assert count(g_vars['batch_stats']) and count(d_vars['batch_stats'])

  def apply_g(g_params):
    return g.apply({**g_vars, 'params': g_params}, l, train=True,
                   rngs={'dropout': jax.random.PRNGKey(2)}, mutable=['batch_stats'])[0]

  def apply_d(d_params, y):
    return d.apply({**d_vars, 'params': d_params}, l, y, train=True,
                   mutable=['batch_stats'])[0]

  def g_loss(g_params):
    fake = apply_g(g_params)
    return pix2pix_losses.generator_loss(apply_d(d_vars['params'], fake), fake, target)['total']

  def d_loss(d_params):
    fake = jax.lax.stop_gradient(apply_g(g_vars['params']))
    return pix2pix_losses.discriminator_loss(apply_d(d_params, target), apply_d(d_params, fake))

  g_grads, d_grads = jax.jit(lambda: (jax.grad(g_loss)(g_vars['params']),
                                      jax.grad(d_loss)(d_vars['params'])))()
  assert_every_gradient_nonzero(g_grads, 'pix2pix G')
  assert_every_gradient_nonzero(d_grads, 'pix2pix D')
