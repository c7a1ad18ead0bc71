"""Tiny settings for tests and quick checks: the paper's structure with tiny widths.

`tiny_model(config)` narrows a config's model in place (same sub-nets, same code paths, a few
thousand times cheaper); `get_config()` is that model trained for a few steps on the demo
photos at 32 px. The tests build on these (tests/conftest.py).
"""

import ml_collections

from configs import default


def tiny_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Gives `c` the tiny model (in place) and returns it."""
  m = c.model
  m.restoration.features = 8
  m.restoration.growth = 4
  m.restoration.num_blocks = 1
  m.restoration.num_units = 2
  m.similarity.width = 8
  m.similarity.query_chunk = 16
  m.histogram.num_bins = 8
  m.colorization.block_units = (2, 2, 2, 2)
  m.colorization.growth = 4
  m.colorization.bottleneck = 2
  m.colorization.stem_features = 8
  m.colorization.fusion_units = 1
  m.discriminator.features = 8
  m.discriminator.num_layers = 2
  # The perceptual loss's VGG-19 has ImageNet widths whatever the model's: its first two
  # blocks (still two layers summed) instead of relu2_2..relu5_2 (13 convolutions) cut the
  # tracing and compiling of every training step.
  c.loss.perceptual_layers = ('relu1_2', 'relu2_2')
  return c


def get_config() -> ml_collections.ConfigDict:
  """The tiny model on the bundled demo photos, 32 px crops, 4 steps, everything logged."""
  c = tiny_model(default.get_config())
  c.dataset = 'demo'
  c.data.image_size = 32
  c.data.eval_image_size = 32
  c.train.batch_size = 2
  c.train.steps_per_epoch = 2
  c.train.num_train_steps = 4
  c.train.log_every = 1
  c.train.image_every = 2
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.train.num_eval_batches = 1
  c.train.eval_batch_size = 2
  return c
