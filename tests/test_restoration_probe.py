"""pikfix_jax.restoration_probe: the restoration sub-net's settings are chosen on photos that
no split of the bundled data holds."""

import math

import numpy as np
import pytest

from configs import demo
from configs import tiny
from pikfix_jax import restoration_probe
from pikfix_jax.data import input_pipeline
from pikfix_jax.data import sources


def test_probe_photos_are_outside_the_demo_splits():
  config = demo.get_config()
  for split in ('train', 'validation'):
    ids = set(input_pipeline.split_ids(sources.get_split(config, split)))
    assert ids and not ids & set(restoration_probe.PROBE_PHOTOS), split


@pytest.mark.slow
def test_probe_scores_degraded_restored_and_clean_crops():
  config = tiny.tiny_model(demo.get_config())
  config.data.image_size, config.train.batch_size = 32, 2
  result = restoration_probe.run(config, steps=2)
  assert result['crops'] == 4 * len(restoration_probe.PROBE_PHOTOS)
  # The damage is real, and two steps leave the residual sub-net close to the identity.
  assert 12 < result['degraded_l_psnr'] < 30 and result['degraded_l_ssim'] < 0.9
  assert abs(result['gain_psnr']) < 3.0
  assert math.isfinite(result['clean_restored_l_psnr']) and result['clean_restored_l_psnr'] > 30


def test_probe_crops_follow_the_degradation_config():
  config = demo.get_config()
  degraded, clean = restoration_probe.probe_crops(config)
  assert degraded.shape == clean.shape == (24, 128, 128, 1)
  config.data.degradation.unstructured = ()
  for p in ('texture_prob', 'paper_prob', 'hole_prob', 'grain_prob', 'fade_prob'):
    config.data.degradation[p] = 0.0
  untouched, _ = restoration_probe.probe_crops(config)
  np.testing.assert_allclose(untouched, clean, atol=2e-3)
  assert np.abs(degraded - clean).mean() > 0.01
