"""Paper configuration of Pik-Fix (WACV 2023, sections 3-4): configs/common.py plus Pik-Fix's
model, loss, ResNet-34 and discriminator-update fields. Every field is used.

Other Pik-Fix configs import this one and override fields. Override anything from the command
line with `--config.section.field=value`; an unknown key is an error.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.method = 'pikfix'  # pikfix_jax/methods/pikfix.py

  # ---------------------------------------------------------------------------- model
  m = c.model = ml_collections.ConfigDict()
  m.dtype = 'float32'  # Compute dtype of convolutions/matmuls: float32 or bfloat16 (params stay f32).
  m.remat = False  # Rematerialise dense blocks in the backward pass (saves GPU memory; XLA:CPU
  # merges the recomputation back, docs/BENCHMARKS.md "Paper config").

  r = m.restoration = ml_collections.ConfigDict()
  r.levels = (1, 4, 8)  # Downsampling factor of each RDN level (Table 6 single-level: (1,)).
  r.features = 64  # Width of each level's feature maps.
  r.num_blocks = 3  # Residual dense blocks per level.
  r.num_units = 4  # Dense units (3x3 conv + ReLU) per block.
  r.growth = 32  # Channels added by each dense unit.

  s = m.similarity = ml_collections.ConfigDict()
  s.mode = 'multi'  # Table 5: 'multi' (eq. 1 per scale), 'single' (one map, resized), 'none'.
  s.width = 64  # Common projection width C.
  s.temperature = 0.005  # Softmax temperature over reference positions (authors' code).
  s.train_backbone = False  # Fine-tune the ResNet-34 (default: frozen).
  s.query_chunk = 1024  # Query positions per chunk in the histogram warp (memory bound).

  h = m.histogram = ml_collections.ConfigDict()
  h.num_bins = 32  # K bins per chroma channel (paper silent; docs/MODEL.md).
  h.sigma = 0.1  # Gaussian spread of eq. (3).
  h.vmin = -1.0  # Bin centre initialisation range, eq. (4).
  h.vmax = 1.0
  h.learn_centers = True  # Bin centres u_k are learnable (paper).
  # Centres of the EMD term's histograms (eq. 7): 'fixed' (eq. 4's, as the authors' loss) or
  # 'learned' (the SPHist's learnable centres; the EMD can then fall by moving them).
  h.loss_centers = 'fixed'
  h.fusion = 'histogram'  # Table 4: 'histogram' (SPHist) or 'ab' (raw reference ab).
  h.scales = 'multi'  # Table 4: 'multi' (all 4 encoder scales), 'single' (first scale), 'input'.

  z = m.colorization = ml_collections.ConfigDict()
  z.block_units = (6, 12, 24, 16)  # Dense units per encoder block (DenseNet-121 layout).
  z.growth = 32  # Growth rate of each dense unit.
  z.bottleneck = 4  # Bottleneck width multiplier (1x1 conv -> bottleneck*growth channels).
  z.stem_features = 64  # Width of the stem (7x7/2 conv + 3x3/2 max-pool).
  z.fusion_units = 6  # Dense units in each fusion module.
  z.dropout = 0.0  # Dropout inside dense units (training only).

  g = m.discriminator = ml_collections.ConfigDict()
  g.features = 64  # Width of the first PatchGAN layer.
  g.num_layers = 3  # Strided layers (70x70 receptive field with 3).
  g.condition_on_reference = True  # Also show D the reference's global ab histogram (docs/MODEL.md).

  # Converted ImageNet ResNet-34 of the similarity sub-net (data_prep.convert_weights); '' =
  # random.
  c.backbones.resnet34 = ''

  # ---------------------------------------------------------------------------- loss
  l = c.loss = ml_collections.ConfigDict()
  l.alpha = 1.0  # Luminance L1 weight.
  l.beta = 0.2  # VGG-19 perceptual loss weight.
  l.lambda_emd = 0.5  # EMD histogram loss weight.
  l.gamma = 1.0  # Chroma L1 weight.
  l.eta = 0.2  # Adversarial loss weight.
  l.adversarial = 'nonsaturating'  # 'nonsaturating' (eq. 9 log loss), 'lsgan' or 'hinge'.
  l.perceptual_layers = ('relu2_2', 'relu3_2', 'relu4_2', 'relu5_2')  # VGG-19 layers.

  c.train.d_steps = 1  # Discriminator updates per generator update.
  c.train.d_first = True  # Update D before G in each step.
  return c
