"""The CMS4CV objectives (losses/cms4cv.py) against NumPy/torch."""

import jax.numpy as jnp
import numpy as np
import torch

from pikfix_jax import metrics
from pikfix_jax.losses import cms4cv as cms4cv_losses
from tree_checks import uniform


def test_cms4cv_unet_loss_equals_numpy_mae_and_gaussian_ssim():
  """SSIM as tf.image.ssim: 11x11 Gaussian (sigma 1.5), valid positions, population
  statistics = skimage's gaussian_weights variant (metrics.ssim(gaussian=True))."""
  target = uniform(16, (2, 24, 20, 3))
  output = np.clip(target + 0.2 * uniform(17, target.shape, -1.0), 0, 1).astype(np.float32)
  terms = cms4cv_losses.unet_loss(jnp.asarray(output), jnp.asarray(target))
  mae = np.mean(np.abs(output.astype(np.float64) - target))
  ssim = metrics.ssim(target, output, data_range=1.0, gaussian=True)
  np.testing.assert_allclose(cms4cv_losses.ssim(output, target), ssim, rtol=1e-5)
  np.testing.assert_allclose(terms['mae'], mae, rtol=1e-5)
  np.testing.assert_allclose(terms['total'], mae + 1 - ssim.mean(), rtol=1e-5)
  np.testing.assert_allclose(cms4cv_losses.unet_loss(jnp.asarray(target), jnp.asarray(target))['total'],
                             0.0, atol=1e-6)


def test_cms4cv_gan_losses_equal_torch():
  real, fake = uniform(18, (4, 1), -3.0) * 3, uniform(19, (4, 1), -3.0) * 3
  output, target = uniform(20, (2, 8, 8, 3)), uniform(21, (2, 8, 8, 3))
  bce = torch.nn.BCEWithLogitsLoss()
  t = torch.from_numpy
  d_expected = bce(t(real), torch.ones(real.shape)) + bce(t(fake), torch.zeros(fake.shape))
  adv = bce(t(fake), torch.ones(fake.shape))
  mae = torch.nn.L1Loss()(t(output), t(target))
  np.testing.assert_allclose(cms4cv_losses.discriminator_loss(real, fake), d_expected.item(), rtol=1e-6)
  terms = cms4cv_losses.generator_loss(fake, output, target)
  np.testing.assert_allclose(terms['adversarial'], adv.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['mae'], mae.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['total'], (adv + 150 * mae).item(), rtol=1e-6)
