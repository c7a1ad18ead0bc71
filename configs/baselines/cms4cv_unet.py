"""The CMS4CV U-Net (Carboniero, Mancinelli, Sacerdote 2024, sec. 3 and appendix 8.3), their
best variant: grey input, 5 down-sampling blocks, 1024-channel bottleneck, an extra
up-sampling block for their 2x super-resolution, sigmoid RGB; MAE + (1 - SSIM).

  python -m pikfix_jax.main --config=configs/baselines/cms4cv_unet.py --workdir=W

sr_factor 2 is the report's task (the network sees the input shrunk 2x and returns it full
size: 128^2 -> 256^2); 1 uses it as a same-size baseline beside the paper's tables. It builds on
configs/common.py; the model, loss and optimiser sections are the report's.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.method = 'cms4cv'
  m = c.model = ml_collections.ConfigDict()
  m.num_down = 5  # Down-sampling blocks (Fusion: 4).
  m.base_features = 0  # Filters of the first block, doubling per block; 0: 1024 / 2^num_down.
  m.sr_factor = 2  # 2: the report's 2x super-resolution + colour; 1: same-size baseline.
  m.upsampling = 'nearest'  # Keras UpSampling2D's default ('bilinear' as an ablation).
  m.segmentation = False  # Fusion: also feed a DeepLabV3-MobileNetV3 segmentation of the input.
  m.gan = False  # U-Net-GAN: train against the 4-block CNN discriminator.
  m.d_features = 64  # Filters of the discriminator's first block (x2 per block).
  # Converted DeepLabV3-MobileNetV3 of the Fusion model's segmentation (docs/WEIGHTS.md).
  c.backbones.deeplabv3 = ''
  l = c.loss = ml_collections.ConfigDict()
  l.ssim_weight = 1.0  # MAE + ssim_weight (1 - SSIM) (U-Net and Fusion).
  l.mae_weight = 150.0  # U-Net-GAN: adversarial + mae_weight MAE (lambda, report sec. 4).
  o = c.optim
  o.learning_rate = 1e-3  # Not in the report: Keras Adam's default (docs/MODEL.md).
  o.b1 = 0.9  # Keras Adam's defaults.
  o.b2 = 0.999
  # Keras' epsilon, in optax's place (added to the bias-corrected sqrt(v); Keras adds it before
  # the bias correction, a larger effective epsilon over the first few thousand steps).
  o.eps = 1e-7
  o.decay_rate = 1.0  # The report names no schedule.
  return c
