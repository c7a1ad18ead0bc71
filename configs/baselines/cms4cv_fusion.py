"""The CMS4CV Fusion model: the U-Net with 4 down-sampling blocks fed the grey image and a
DeepLabV3-MobileNetV3 segmentation of it (report sec. 3). Needs the converted segmentation
weights (--config.backbones.deeplabv3, docs/WEIGHTS.md); refuses to train without them."""

import ml_collections

from configs.baselines import cms4cv_unet


def get_config() -> ml_collections.ConfigDict:
  c = cms4cv_unet.get_config()
  c.model.num_down = 4
  c.model.segmentation = True
  return c
