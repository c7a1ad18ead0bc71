"""The offline default: trains on the photos bundled with scikit-image, no download.

A reduced model (narrow sub-nets, full ResNet-34/VGG-19 structure) on 64x64 crops; finishes in
under 10 minutes on a 2-core CPU and writes checkpoints, TensorBoard events and
validation_grid.png into the workdir.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'demo'
  c.data.image_size = 64
  # Validation: 128 px centre crops of chelsea and coffee, each coloured from its own colour
  # version (the oracle reference; an unrelated reference from 7 training photos says little).
  c.data.eval_image_size = 128
  c.data.eval_reference = 'self'
  c.data.train_repeats = 8
  c.data.degrade = True
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
  c.optim.learning_rate = 5e-4
  c.optim.b1 = 0.9
  c.train.batch_size = 4
  c.train.num_train_steps = 300
  c.train.log_every = 20
  c.train.image_every = 100
  c.train.eval_every = 50
  c.train.checkpoint_every = 100
  c.train.eval_batch_size = 2
  return c
