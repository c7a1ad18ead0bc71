"""Wan et al. 2020 ("Old Photo Restoration via Deep Latent Space Translation"), the restoration
baseline of Pik-Fix's Tables 1-2, trained on our data in its three stages.

  python -m pikfix_jax.main --config=configs/baselines/wan2020.py --workdir=W
  python -m pikfix_jax.main ... --config.train.stage=mapping   # one stage alone

X, Y: the pipeline's synthetic pairs (degraded L, clean L); the defect mask: data.defect_mask;
R: a folder of real old scans (data.real_old_dir; without it VAE1 sees X alone, a warning).
Sizes follow the paper's Table 1 and the authors' release (docs/MODEL.md, "Wan et al. 2020:
networks"); it builds on configs/common.py; the model and loss sections are Wan's own.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.method = 'wan2020'
  c.dataset = 'voc'  # Table 1's "w/ degradation" column (and Table 2 with realold_eval).
  c.data.degrade = True
  c.data.defect_mask = True  # Scratch-detector targets and the partial nonlocal block's mask.
  m = c.model = ml_collections.ConfigDict()
  m.vae_features = 64  # VAE width (latent channels), both VAEs.
  m.vae_downsample = 2  # Stride-2 convs of each VAE encoder (latent at 1/4 resolution).
  m.vae_res = 4  # Residual blocks in each VAE encoder and decoder.
  m.mapping_widths_in = (128, 256, 512)  # T's convs before the partial nonlocal block (Table 1).
  m.mapping_global_res = 2  # Residual blocks of the nonlocal branch.
  m.mapping_res = 6  # Residual blocks after the fusion.
  m.mapping_widths_out = (256,)  # T's convs after the residual blocks, then back to the latent.
  m.detector_features = 64  # Scratch U-Net's first width.
  m.detector_depth = 4  # Scratch U-Net levels.
  m.scratch_threshold = 0.5  # Detector probability above which a pixel is scratched (inference).
  # restore: the largest padded photo (pixels) run at once; the partial nonlocal block's memory
  # is quadratic in latent positions (512^2 px: 16,384 positions, a 1 GiB attention matrix).
  m.max_restore_pixels = 2048 * 2048  # restore refuses larger padded photos (memory grows with size)
  m.d_scales = 2  # Image discriminators' scales (multi-scale PatchGAN).
  m.d_features = 64  # Discriminators' first width.
  m.d_layers = 3  # Strided layers per PatchGAN.
  l = c.loss = ml_collections.ConfigDict()
  l.kl_weight = 1.0  # Eq. 2's KL term.
  l.recon_weight = 10.0  # alpha, eq. 2 (sec. 4.1).
  l.latent_l1_weight = 60.0  # lambda_1, eq. 5.
  # L1 between G_Y(T(z_x)) and y in image space: not in eq. 5 (0, the paper); > 0 adds it.
  l.image_l1_weight = 0.0
  l.feature_matching_weight = 10.0  # lambda_2, eq. 5 (D and VGG feature matching, eq. 6).
  l.focal_gamma = 0.2  # gamma, eq. 13.
  l.focal_weight = 10.0  # beta, eq. 15.
  o = c.optim
  o.learning_rate = 2e-4  # The release's Adam lr and beta1.
  o.b1 = 0.5
  o.b2 = 0.999
  # Sec. 4.1: 2e-4 "for the first 100 epochs, with linear decay to zero thereafter"; the release
  # (pix2pixHD's loop, `--niter 100 --niter_decay 100`) lowers the rate by 2e-4 / 100 after
  # every epoch past the 100th: epochs 1-101 at 2e-4, epoch 200 at 2e-6. In optim.py's rule that
  # is constant_epochs = niter + 1, decay_epochs = niter_decay - 1. Each network's schedule starts
  # at its own stage's first step (one Adam state per network); stage lengths are
  # train.stage_steps, so the decay is reached only when a stage runs more than 101 epochs.
  o.lr_schedule = 'linear_decay'
  o.constant_epochs = 101
  o.decay_epochs = 99
  t = c.train
  t.stages = ('vae', 'mapping', 'scratch')  # The paper's order (fixed).
  t.stage_steps = (50000, 50000, 20000)  # Steps of each stage (the paper gives epochs only).
  t.stage = ''  # '' = every stage in order; a name = that stage's steps only.
  return c
