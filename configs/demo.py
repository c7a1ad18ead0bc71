"""The offline default: trains on the photos bundled with scikit-image, no download.

A reduced model (narrow sub-nets, full ResNet-34/VGG-19 structure, no ImageNet weights) on
64x64 crops; finishes in under 10 minutes on a 2-core CPU and writes checkpoints, TensorBoard
events, validation_grid.png and validation_table.md (the model beside its controls and the
trivial baselines) into the workdir.

Seven training photos cannot teach a colour prior worth having, so the demo shows the part of
Pik-Fix that does not need one: colours read from the reference (docs/MODEL.md, "Why the
reference steers"), and a restoration that helps damaged photos and keeps clean ones. Four
data settings make both learnable in its budget; the paper configs keep the paper's recipe:
* every example's colours and its reference's are hue-rotated together by a random angle
  (data.hue_rotation), so colour cannot be predicted from content and must come from the
  reference;
* references are strategy 1 only, a crop near the input's (data.reference_max_shift) and
  jittered and warped as in the paper: another of seven unrelated photos (strategy 2) carries
  no information about the input's colours;
* the old-photo damage is the part a small restoration sub-net can undo in its budget:
  noise, JPEG, film grain, scratch and paper textures, holes; not blur (sigma up to 5 px
  removes the detail of a 64 px crop), colour jitter or fading (a shift or fade of the whole
  print cannot be told from the photo's own exposure, so undoing it darkens clean photos);
  and three inputs in five are left clean, so the sub-net learns to keep what needs no repair
  (docs/MODEL.md, "Restoration in the demo": chosen on grey scikit-image photos that neither
  train nor validate).
Validation: 128 px centre crops of chelsea and coffee (never trained on), each at four hue
rotations (0, 90, 180, 270 degrees) with its reference turned alongside, so a model with a fixed
colour prior fails there; the reference is the ground truth itself (data.eval_reference='self'),
which is what can be shown without ImageNet features.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'demo'
  c.data.image_size = 64
  c.data.eval_image_size = 128
  c.data.eval_reference = 'self'
  c.data.eval_hue_rotations = (0.0, 90.0, 180.0, 270.0)
  c.data.hue_rotation = 180.0
  c.data.reference_strategies = (1,)
  # Within a sixteenth of the crop side (4 px): the nearer the reference, the more of it the similarity
  # sub-net can match to the input (docs/MODEL.md, "Why the reference steers").
  c.data.reference_max_shift = 0.0625
  c.data.train_repeats = 32  # 224 examples (56 steps) per epoch
  c.data.degrade = True
  c.data.degradation.unstructured = ('noise', 'jpeg')
  c.data.degradation.fade_prob = 0.0
  c.data.degradation.clean_prob = 0.6
  m = c.model
  m.restoration.features = 16
  m.restoration.growth = 8
  m.restoration.num_blocks = 2
  m.restoration.num_units = 3
  m.similarity.width = 16
  m.histogram.num_bins = 16
  m.colorization.block_units = (2, 3, 4, 3)
  m.colorization.growth = 8
  m.colorization.bottleneck = 2
  m.colorization.stem_features = 16
  m.colorization.fusion_units = 2
  m.discriminator.features = 16
  # No ImageNet VGG-19 ships offline: a perceptual loss on random features would only cost
  # time here (it is on, and tested, in every other config).
  c.loss.beta = 0.0
  # The adversarial term keeps this small model from learning to read the reference in its
  # budget on some seeds (docs/MODEL.md, "Why the reference steers"); it is on, and tested,
  # in every other config.
  c.loss.eta = 0.0
  c.optim.learning_rate = 5e-4
  c.optim.b1 = 0.9
  c.train.batch_size = 4
  c.train.num_train_steps = 1000
  c.train.log_every = 50
  c.train.image_every = 250
  c.train.eval_every = 250
  c.train.checkpoint_every = 250
  c.train.eval_batch_size = 2
  return c
