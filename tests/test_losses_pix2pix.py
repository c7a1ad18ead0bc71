"""Pix2pix's objective (losses/pix2pix.py) against torch's BCE and L1."""

import numpy as np
import torch

from pikfix_jax.losses import pix2pix as pix2pix_losses
from tree_checks import uniform


def test_pix2pix_losses_equal_torch():
  real, fake = uniform(7, (2, 6, 6, 1), -3.0) * 3, uniform(8, (2, 6, 6, 1), -3.0) * 3
  output, target = uniform(9, (2, 8, 8, 3), -1.0), uniform(10, (2, 8, 8, 3), -1.0)
  bce = torch.nn.BCEWithLogitsLoss()
  t = torch.from_numpy
  d_expected = 0.5 * (bce(t(real), torch.ones(real.shape)) + bce(t(fake), torch.zeros(fake.shape)))
  adv = bce(t(fake), torch.ones(fake.shape))
  l1 = torch.nn.L1Loss()(t(output), t(target))
  np.testing.assert_allclose(pix2pix_losses.discriminator_loss(real, fake), d_expected.item(), rtol=1e-6)
  terms = pix2pix_losses.generator_loss(fake, output, target)
  np.testing.assert_allclose(terms['adversarial'], adv.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['l1'], l1.item(), rtol=1e-6)
  np.testing.assert_allclose(terms['total'], (adv + 100 * l1).item(), rtol=1e-6)
