"""Wan et al. 2020's face enhancement network (TPAMI sec. 3.4, eqs. 16-18): the progressive SPADE
generator G_f with its multi-scale discriminator D_f, trained on a folder of aligned face crops
with the project's degradations.

  python -m pikfix_jax.main --config=configs/baselines/wan2020_face.py --workdir=W \
      --config.data.image_folder=FACES
  # jointly behind a trained Wan et al. translation network (sec. 3.4, "trained jointly"):
  python -m pikfix_jax.main ... --config.model.behind_wan=WAN_WORKDIR

The face crop is data.image_size (the release's load_size: 256; 512 is its FaceSR_512); the
folder's faces should be aligned crops of that size (the pipeline takes random image_size crops,
resizing up only faces smaller than that). G_f's input: the RGB of (degraded L, the clean
face's chroma), or with model.gray_input of (degraded L, zero chroma); target: the clean RGB
face. docs/MODEL.md, "Wan et al.: training the face network", gives each choice and its source.
It builds on configs/common.py; the model and loss sections are the face network's own.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.method = 'wan2020_face'
  c.dataset = 'image_folder'  # A folder of aligned face crops (data.image_folder); FFHQ in the paper.
  c.data.degrade = True
  # Evaluation feeds the clean face's own chroma, as training does (the network restores the
  # face of an already-coloured photo); the reference is where the method reads it from.
  c.data.eval_reference = 'self'
  c.data.reference_strategies = (1,)  # Training reads no reference: the cheapest strategy.
  m = c.model = ml_collections.ConfigDict()
  m.ngf = 64  # The release's ngf (92.1M parameters at 256).
  m.num_upsampling_layers = 'normal'  # The release's: 5 up-samplings (8 x 8 start at 256).
  m.spade_hidden = 128  # Width of SPADE's shared conv (the release's hard-coded 128).
  # True: G_f sees the degraded L as a grey RGB face (zero chroma) and must colour it too.
  m.gray_input = False
  # A wan2020 (or wan_ldm) training workdir: the face network's input is that frozen pipeline's
  # restoration of the degraded L (sec. 3.4's joint training); '' = the degraded L itself.
  m.behind_wan = ''
  m.d_scales = 2  # D_f: SPADE's multiscale discriminator (num_D 2).
  m.d_features = 64  # ndf.
  m.d_layers = 4  # n_layers_D.
  l = c.loss = ml_collections.ConfigDict()
  l.perceptual_weight = 10.0  # Eq. 17's VGG term; the release's training code's lambda_vgg.
  l.feature_matching_weight = 10.0  # D_f feature matching (lambda_feat); 0 = eq. 17-18 alone.
  o = c.optim
  # SPADE's training defaults, the code base the release's face network comes from (the release
  # ships no training options): Adam lr 2e-4 with TTUR (G at lr / 2, D at 2 lr), betas (0, 0.9),
  # constant for niter = 50 epochs (niter_decay 0).
  o.learning_rate = 2e-4
  o.ttur = True  # False: G and D both at learning_rate.
  o.b1 = 0.0
  o.b2 = 0.9
  o.lr_schedule = 'linear_decay'
  o.constant_epochs = 50
  o.decay_epochs = 0
  t = c.train
  t.num_epochs = 50
  t.batch_size = 8  # The paper gives none; G_f's BatchNorm wants more than the common 2.
  return c
