"""Shared test fixtures: tiny model configs that exercise the real code paths."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

from configs import default  # noqa: E402


def tiny_config(**model_overrides):
  """The paper config with tiny widths (same structure, a few thousand times cheaper)."""
  c = default.get_config()
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
  for key, value in model_overrides.items():
    section, field = key.split('.')
    m[section][field] = value
  c.data.image_size = 32
  c.train.batch_size = 2
  return c


@pytest.fixture
def tiny():
  return tiny_config()
