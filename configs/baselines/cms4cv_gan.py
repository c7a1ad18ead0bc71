"""The CMS4CV U-Net-GAN: the U-Net against a discriminator of 4 conv blocks and a dense layer,
BCE, generator loss adversarial + 150 MAE, lr 1e-5 for both (report sec. 3-4)."""

import ml_collections

from configs.baselines import cms4cv_unet


def get_config() -> ml_collections.ConfigDict:
  c = cms4cv_unet.get_config()
  c.model.gan = True
  c.optim.learning_rate = 1e-5
  return c
