"""GFP-GAN (Wang, Li, Zhang, Shan, "Towards Real-World Blind Face Restoration with Generative
Facial Prior", CVPR 2021) trained on a folder of aligned face crops with our degradations
(methods/gfpgan.py; docs/MODEL.md, "GFP-GAN training"):

  python -m pikfix_jax.main --config=configs/baselines/gfpgan.py --workdir=W \
      --config.data.image_folder=FACES [--config.backbones.vgg19=vgg19.msgpack] \
      [--config.backbones.arcface=arcface.msgpack]

FACES holds aligned square faces of data.image_size = model.out_size pixels (FFHQ's 512 px
crops for the default): the data pipeline enlarges smaller crops but takes a random window of
larger ones.

The network's input is the RGB of (degraded L, the clean crop's chroma): colour-preserving face
restoration, as the release trains it and as `restore --faces=gfpgan` runs it on coloured
photos; --config.model.gray_input=True trains the black-and-white variant (degraded L, zero
chroma in; the clean colour face out). Evaluation shows it the clean crop's chroma through
data.eval_reference='self'.

Losses and their weights follow the release's options (train_gfpgan_v1.yml): pixel L1 0.1,
pyramid L1 1 (dropped after 50k steps), VGG-19 perceptual 1 + style 50 (layers 1_2 .. 5_4 with
weights 0.1, 0.1, 1, 1, 1), non-saturating GAN 0.1 against StyleGAN2's discriminator with R1
(gamma 10, every 16th step, lazily); the identity loss 10 (L1 between ArcFace embeddings)
when backbones.arcface names the converted arcface_resnet18.pth of the release (without it the
loss is off, with a log line); the facial-component losses (three component discriminators on
eye / mouth crops, GAN x 1 + style x 200) when --config.data.face_components=FILE.json names
the boxes of data_prep.face_components. Left out: the EMA generator (TrainState has no field
for it). docs/MODEL.md gives the reasons.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.method = 'gfpgan'
  c.dataset = 'image_folder'
  d = c.data
  d.image_size = 512  # = model.out_size: the faces are trained at the network's size.
  d.eval_image_size = 512
  d.degrade = True  # The project's old-photo degradations of the luminance (docs/DATA.md).
  d.eval_reference = 'self'  # Evaluation's "reference" is the clean crop: its chroma goes in.

  # The frozen ArcFace of the identity loss and of evaluate's identity distance: the release's
  # arcface_resnet18.pth converted (data_prep.convert_weights --arch=arcface); '' = no identity
  # loss (docs/WEIGHTS.md).
  c.backbones.arcface = ''

  m = c.model = ml_collections.ConfigDict()
  # GFPGANv1Clean (models/gfpgan.py) as released for v1.3 / v1.4, so model.init_checkpoint can
  # start from a converted release (the paper's v1 trained channel_multiplier 1).
  m.out_size = 512
  m.num_style_feat = 512
  m.channel_multiplier = 2
  m.num_mlp = 8  # Layers of the style MLP (unused with the U-Net's latent codes; kept as released).
  m.narrow = 1.0  # Width factor of every layer (the tests train narrow nets).
  m.gray_input = False  # True: the input carries no chroma (B/W old photos).
  m.noise_seed = 0  # Inference draws the StyleGAN2 noise maps from this seed (training: fresh).
  # A converted GFP-GAN (data_prep.convert_weights --arch=gfpgan: .msgpack) to start from, '' =
  # random; its architecture must be this section's.
  m.init_checkpoint = ''
  # Keep the StyleGAN2 decoder frozen (the release's fix_decoder with a pretrained prior);
  # only sensible with init_checkpoint.
  m.fix_decoder = False
  # StyleGAN2's discriminator (the release's options: channel_multiplier 1).
  m.d_channel_multiplier = 1
  m.d_narrow = 1.0

  l = c.loss = ml_collections.ConfigDict()
  l.pixel_weight = 0.1
  l.pyramid_weight = 1.0
  l.pyramid_until = 50000  # Steps after which the pyramid loss is dropped (-1: never).
  l.perceptual_weight = 1.0
  l.style_weight = 50.0
  # VGG-19 ReLU outputs (the release reads the convolutions before their ReLUs; the project's
  # frozen VGG gives ReLU outputs) and their weights.
  l.perceptual_layers = ('relu1_2', 'relu2_2', 'relu3_4', 'relu4_4', 'relu5_4')
  l.perceptual_layer_weights = (0.1, 0.1, 1.0, 1.0, 1.0)
  l.adversarial_weight = 0.1
  l.identity_weight = 10.0  # Only with backbones.arcface.
  l.r1_weight = 10.0  # gamma of R1; the penalty is gamma / 2 * R1 * r1_every on its steps.
  l.r1_every = 16  # Lazy R1 (StyleGAN2): every r1_every-th step.

  # Facial-component losses (paper eq. 5), on when data.face_components names a boxes file
  # (data_prep.face_components): three FacialComponentDiscriminators (left eye, right eye,
  # mouth) on RoIAlign crops of 80 / 120 px at out_size 512 (scaled), the release's weights
  # (gan_component_opt 1, comp_style_weight 200) and optimiser (Adam 2e-3, betas (0.9, 0.99)).
  l.component_gan_weight = 1.0
  l.comp_style_weight = 200.0
  m.component_d_width = 1.0  # Width factor of the component discriminators (tests: narrow).
  o_comp = c.component_optim = ml_collections.ConfigDict()
  o_comp.learning_rate = 2e-3
  o_comp.b1 = 0.9
  o_comp.b2 = 0.99

  o = c.optim
  # The release: Adam lr 2e-3, betas (0, 0.99) for G; D's lr and betas corrected for the lazy
  # R1 (x r, ^r with r = r1_every / (r1_every + 1)), done in methods/gfpgan.py.
  o.learning_rate = 2e-3
  o.b1 = 0.0
  o.b2 = 0.99
  o.decay_rate = 1.0  # Constant (the release halves it at 600k and 700k of 800k steps).
  t = c.train
  t.batch_size = 12  # The release: 3 per GPU on 4 GPUs.
  t.num_train_steps = 800000
  return c
