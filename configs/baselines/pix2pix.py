"""Pix2pix (Isola et al. 2017), the first row of Pik-Fix's Tables 1-2, trained on our pairs
(the data, degradations and evaluation of configs/common.py): degraded L in, Lab out.

  python -m pikfix_jax.main --config=configs/baselines/pix2pix.py --workdir=W

It builds on configs/common.py; the model and loss sections are Pix2pix's own.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.method = 'pix2pix'
  m = c.model = ml_collections.ConfigDict()
  m.num_downs = 8  # U-Net-256: 8 stride-2 levels (inputs are padded to multiples of 2^8).
  m.ngf = 64  # Width of the first encoder layer (x2 per level up to x8).
  m.d_features = 64  # Width of the PatchGAN's first layer.
  m.d_layers = 3  # Strided PatchGAN layers (3: the 70x70 receptive field).
  l = c.loss = ml_collections.ConfigDict()
  l.l1_weight = 100.0  # lambda of Isola et al.'s eq. 4.
  o = c.optim
  o.learning_rate = 2e-4  # Adam 2e-4, beta1 0.5 (Isola et al. sec. 6.2).
  o.b1 = 0.5
  o.b2 = 0.999
  # Isola et al. sec. 6.2 / junyanz's defaults (`--n_epochs 100 --n_epochs_decay 100`): constant
  # for 100 epochs, then linear to 0 over 100 (optim.py's rule is junyanz's lambda_rule). Over
  # our 20 epochs (train.num_epochs) the rate stays 2e-4; 200 epochs run the whole schedule.
  o.lr_schedule = 'linear_decay'
  o.constant_epochs = 100
  o.decay_epochs = 100
  return c
