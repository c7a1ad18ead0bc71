"""Tests for the old-photo degradations, procedural textures and the data_prep tools."""

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from pikfix_jax.data import degradations as dg
from pikfix_jax.data import textures

SEED = tf.constant([3, 7], tf.int64)


def _smooth_image(h=64, w=64, channels=1, seed=0):
  """A natural-ish image: low-frequency structure plus mild texture, in [0.1, 0.9]."""
  rng = np.random.default_rng(seed)
  coarse = rng.random((h // 8, w // 8, channels)).astype(np.float32)
  x = tf.image.resize(coarse[None], [h, w], method='bicubic')[0]
  x = x + 0.03 * rng.standard_normal((h, w, channels)).astype(np.float32)
  return tf.clip_by_value(0.1 + 0.8 * (x - tf.reduce_min(x)) / (tf.reduce_max(x) - tf.reduce_min(x)),
                          0.0, 1.0)


def _high_freq_energy(x):
  x = np.asarray(x)[..., 0]
  lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
  return float(np.mean(lap ** 2))


def _blockiness(x):
  """Mean |step| across 8x8 block borders over mean |step| inside blocks (1 = no blocks)."""
  x = np.asarray(x)[..., 0]
  d = np.abs(np.diff(x, axis=1))  # d[:, j] = |x[:, j+1] - x[:, j]|
  border = d[:, 7::8].mean()
  inside = np.delete(d, np.s_[7::8], axis=1).mean()
  return border / inside


def _in_range(x):
  x = np.asarray(x)
  return np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


def test_gaussian_noise_raises_variance():
  flat = tf.fill([64, 64, 1], 0.5)
  out = dg.gaussian_noise(flat, SEED, (20.0, 20.0))
  assert 15 / 255 < np.std(out) < 25 / 255
  assert _in_range(out)


@pytest.mark.parametrize('blur', [
    lambda x: dg.gaussian_blur(x, SEED, (7,), (2.0, 2.0)),
    lambda x: dg.box_blur(x, SEED, (5,)),
])
def test_blurs_lower_high_frequency_energy(blur):
  x = tf.random.stateless_uniform([64, 64, 1], [1, 2])
  out = blur(x)
  assert out.shape == x.shape
  assert _high_freq_energy(out) < 0.2 * _high_freq_energy(x)
  assert _in_range(out)
  np.testing.assert_allclose(np.mean(out), np.mean(x), atol=0.01)  # Blur keeps the mean.


def test_gaussian_blur_kernel_size_matters():
  x = tf.random.stateless_uniform([64, 64, 1], [1, 2])
  small = dg.gaussian_blur(x, SEED, (3,), (5.0, 5.0))
  large = dg.gaussian_blur(x, SEED, (7,), (5.0, 5.0))
  assert _high_freq_energy(large) < _high_freq_energy(small)


def test_jpeg_adds_8x8_blockiness():
  x = _smooth_image(128, 128)
  out = dg.jpeg(x, SEED, (10, 10))
  assert out.shape == x.shape
  assert _blockiness(out) > 1.3 * _blockiness(x)
  assert _in_range(out)


def test_color_jitter_shifts_each_channel_by_a_constant():
  x = tf.fill([16, 16, 3], 0.5)
  out = np.asarray(dg.color_jitter(x, SEED, 20.0))
  shifts = out[0, 0] - 0.5
  assert np.all(np.abs(shifts) <= 20 / 255 + 1e-6) and np.ptp(shifts) > 0
  np.testing.assert_allclose(out, 0.5 + np.broadcast_to(shifts, out.shape), atol=1e-6)


def test_fade_lowers_contrast_towards_paper_tone():
  x = _smooth_image(channels=3)
  out = dg.fade(x, SEED, (0.3, 0.3))
  assert np.std(out) < 0.75 * np.std(x)
  assert _in_range(out)


@pytest.mark.parametrize('mode', [0, 1, 2])
def test_blend_modes_only_lighten(mode):
  x = _smooth_image()
  layer = tf.random.stateless_uniform([64, 64, 1], [5, 5])
  out = dg.blend(x, layer, tf.constant(0.6), tf.constant(mode))
  assert np.all(np.asarray(out) >= np.asarray(x) - 1e-6)
  assert np.mean(out) > np.mean(x) + 0.01
  assert _in_range(out)


def test_blend_texture_uses_bank_and_keeps_shape():
  bank = tf.constant(textures.make_bank(2, 64, seed=0).scratch)
  x = _smooth_image(48, 80, channels=3)
  layer = dg.sample_texture(bank, SEED, 48, 80)
  assert layer.shape == (48, 80, 1) and _in_range(layer)
  out = dg.blend_texture(x, SEED, bank, (0.8, 0.8))
  assert out.shape == x.shape and _in_range(out)
  assert np.all(np.asarray(out) >= np.asarray(x) - 1e-6) and np.any(np.asarray(out) > x + 0.05)


def test_polygon_field_regular_hexagon_area():
  angles = tf.constant(np.linspace(-np.pi, np.pi, 6, endpoint=False), tf.float32)
  radii = tf.fill([6], 20.0)
  grid_y = tf.range(64, dtype=tf.float32)[:, None]
  grid_x = tf.range(64, dtype=tf.float32)[None, :]
  field = dg.polygon_field(grid_y, grid_x, tf.constant([32.0, 32.0]), angles, radii)
  area = float(tf.reduce_sum(tf.cast(field > 0, tf.float32)))
  assert abs(area - 1.5 * np.sqrt(3) * 20 ** 2) < 0.03 * area  # Exact hexagon area 1039.
  assert field[32, 32] > 0 and field[0, 0] < 0


def test_holes_are_white_and_leave_the_rest():
  x = _smooth_image(96, 96)
  out = np.asarray(dg.holes(x, SEED, 3, (0.2, 0.3), (2.0, 2.0)))
  mask = np.asarray(dg.hole_mask(96, 96, SEED, 3, (0.2, 0.3), (2.0, 2.0)))
  core = mask[..., 0] == 1.0
  assert core.mean() > 0.02  # Some area is punched out...
  np.testing.assert_array_equal(out[core], 1.0)  # ...and is pure white.
  untouched = mask[..., 0] == 0.0
  np.testing.assert_array_equal(out[untouched], np.asarray(x)[untouched])
  assert _in_range(out)


def test_film_grain_raises_variance_not_mean():
  flat = tf.fill([64, 64, 1], 0.5)
  out = dg.film_grain(flat, SEED, (8.0, 8.0))
  assert np.std(out) > 4 / 255
  assert abs(np.mean(out) - 0.5) < 0.01 and _in_range(out)


@pytest.fixture(scope='module')
def bank():
  b = textures.make_bank(3, 96, seed=0)
  return tf.constant(b.scratch), tf.constant(b.paper)


@pytest.mark.parametrize('shape', [(64, 64, 1), (48, 80, 3)])
def test_degrade_composite_keeps_shape_dtype_range_and_is_deterministic(shape, bank):
  cfg = default.get_config().data.degradation
  x = _smooth_image(shape[0], shape[1], shape[2])
  outs = [dg.degrade(x, tf.constant([0, k], tf.int64), cfg, bank) for k in (0, 0, 1)]
  for out in outs:
    assert out.shape == shape and out.dtype == tf.float32 and _in_range(out)
  np.testing.assert_array_equal(outs[0], outs[1])
  assert np.abs(np.asarray(outs[0]) - np.asarray(outs[2])).max() > 0.05


def test_degrade_with_everything_on_changes_image_and_without_is_identity(bank):
  cfg = default.get_config().data.degradation
  x = _smooth_image()
  cfg.drop_prob = 0.0
  for p in ('texture_prob', 'paper_prob', 'hole_prob', 'grain_prob', 'fade_prob'):
    cfg[p] = 1.0
  out = dg.degrade(x, SEED, cfg, bank)
  assert np.abs(np.asarray(out) - np.asarray(x)).mean() > 0.03
  cfg.drop_prob = 1.0
  for p in ('texture_prob', 'paper_prob', 'hole_prob', 'grain_prob', 'fade_prob'):
    cfg[p] = 0.0
  np.testing.assert_allclose(dg.degrade(x, SEED, cfg, bank), x, atol=1e-6)


def _only_unstructured(names):
  cfg = _mask_config()  # every structured step off
  cfg.unstructured = names
  return cfg


def test_unstructured_list_applies_only_the_named_degradations(bank):
  x = np.asarray(_smooth_image(seed=2))
  np.testing.assert_allclose(dg.degrade(x, SEED, _only_unstructured(()), bank), x, atol=1e-6)
  # Noise alone: zero-mean residual of the configured strength, nothing smoothed away.
  cfg = _only_unstructured(('noise',))
  cfg.noise_sigma = (20.0, 20.0)
  residual = np.asarray(dg.degrade(x, SEED, cfg, bank)) - x
  assert abs(residual.mean()) < 0.01 and 0.06 < residual.std() < 0.1
  # Blur alone: the image loses high frequencies and keeps its mean.
  cfg = _only_unstructured(('blur',))
  cfg.blur_sigma = (3.0, 3.0)
  cfg.blur_kernel_sizes = (7,)
  out = np.asarray(dg.degrade(x, SEED, cfg, bank))
  detail = lambda im: np.abs(np.diff(im[8:-8, 8:-8], axis=0)).mean()
  assert detail(out) < 0.6 * detail(x) and abs(out.mean() - x.mean()) < 0.01
  # Leaving one out keeps the others' draws: noise is the same whether blur is listed or not
  # when the blur does nothing (sigma ~ 0).
  cfg_a, cfg_b = _only_unstructured(('noise',)), _only_unstructured(('noise', 'blur'))
  cfg_b.blur_sigma = (1e-3, 1e-3)
  np.testing.assert_allclose(dg.degrade(x, SEED, cfg_a, bank), dg.degrade(x, SEED, cfg_b, bank),
                             atol=1e-6)


def test_unknown_unstructured_name_is_a_one_line_error(bank):
  cfg = _only_unstructured(('noise', 'scratches'))
  with pytest.raises(ValueError,
                     match=r"config.data.degradation.unstructured: unknown \['scratches'\]"):
    dg.degrade(_smooth_image(), SEED, cfg, bank)


def test_degrade_runs_in_tf_data_graph(bank):
  cfg = default.get_config().data.degradation
  ds = tf.data.Dataset.range(4).map(
      lambda i: dg.degrade(tf.fill([32, 40, 1], 0.5), tf.stack([i, i]), cfg, bank),
      num_parallel_calls=2, deterministic=True)
  outs = list(ds.as_numpy_iterator())
  assert len(outs) == 4 and all(o.shape == (32, 40, 1) and _in_range(o) for o in outs)


# --------------------------------------------------------------------------- defect mask
def _mask_config(**probs):
  """Every unstructured step on, structured steps as given (0 unless named)."""
  cfg = default.get_config().data.degradation
  cfg.drop_prob = 0.0
  for p in ('texture_prob', 'paper_prob', 'hole_prob', 'grain_prob', 'fade_prob'):
    cfg[p] = probs.get(p, 0.0)
  return cfg


def _changed(a, b):
  diff = np.abs(np.asarray(a) - np.asarray(b)).max(axis=-1, keepdims=True)
  return (diff > dg.DEFECT_MASK_THRESHOLD / 255.0).astype(np.float32)


@pytest.mark.parametrize('shape', [(64, 64, 1), (48, 80, 3)])
def test_defect_mask_is_exactly_where_the_scratch_texture_changed_the_image(shape, bank):
  x = _smooth_image(*shape)
  marked = 0.0
  for k in range(3):
    seed = tf.constant([k, 11], tf.int64)
    on = _mask_config(texture_prob=1.0, paper_prob=1.0, fade_prob=1.0)
    off = _mask_config(texture_prob=0.0, paper_prob=1.0, fade_prob=1.0)
    image, mask = dg.degrade_with_mask(x, seed, on, bank)
    without = dg.degrade(x, seed, off, bank)
    assert mask.shape == shape[:2] + (1,) and mask.dtype == tf.float32
    np.testing.assert_array_equal(image, dg.degrade(x, seed, on, bank))  # One implementation.
    np.testing.assert_array_equal(mask, _changed(image, without))
    # Grain (after the scratches) and the paper texture (before) never mark a pixel.
    on.grain_prob = 1.0
    np.testing.assert_array_equal(dg.degrade_with_mask(x, seed, on, bank)[1], mask)
    np.testing.assert_array_equal(dg.degrade_with_mask(x, seed, off, bank)[1], 0.0)
    marked += float(np.mean(mask))
  assert 0.01 < marked / 3 < 0.6  # Thin defects: some pixels, far from all.


def test_defect_mask_is_exactly_where_the_holes_changed_the_image(bank):
  x = _smooth_image(96, 96)
  for k in range(3):
    seed = tf.constant([k, 5], tf.int64)
    image, mask = dg.degrade_with_mask(x, seed, _mask_config(hole_prob=1.0, grain_prob=1.0),
                                       bank)
    without = dg.degrade(x, seed, _mask_config(hole_prob=0.0, grain_prob=1.0), bank)
    np.testing.assert_array_equal(mask, _changed(image, without))
    assert np.mean(mask) > 0.005
    # Holes only whiten: every marked pixel became brighter.
    assert np.all((np.asarray(image) - np.asarray(without))[np.asarray(mask)[..., 0] > 0] > 0)


def test_defect_mask_is_zero_without_structured_defects(bank):
  x = _smooth_image(64, 64, 3)
  cfg = _mask_config(paper_prob=1.0, grain_prob=1.0, fade_prob=1.0)  # Scratches, holes off.
  image, mask = dg.degrade_with_mask(x, SEED, cfg, bank)
  assert np.abs(np.asarray(image) - np.asarray(x)).mean() > 0.03  # Degraded all the same.
  np.testing.assert_array_equal(mask, 0.0)
  _, mask = dg.degrade_with_mask(x, SEED, _mask_config(texture_prob=1.0))
  np.testing.assert_array_equal(mask, 0.0)  # No texture bank: no scratches to mark.


# ------------------------------------------------------------------------------ textures
def test_procedural_textures_are_dark_with_bright_defects():
  b = textures.make_bank(4, 128, seed=1)
  assert b.scratch.shape == (4, 128, 128) and b.paper.shape == (4, 128, 128)
  assert b.scratch.dtype == np.uint8
  assert np.median(b.scratch) < 30 and (b.scratch > 200).any()  # Thin bright defects.
  assert b.paper.mean() > b.scratch.mean()  # Paper wear covers more area.
  again = textures.make_bank(4, 128, seed=1)
  np.testing.assert_array_equal(b.scratch, again.scratch)


def test_user_textures_are_loaded_and_inverted(tmp_path):
  from pikfix_jax import image_io  # pylint: disable=g-import-not-at-top
  (tmp_path / 'paper').mkdir()
  white_with_dark_line = np.ones((40, 40), np.float32)
  white_with_dark_line[:, 20] = 0.0
  image_io.write_image(tmp_path / 'paper' / 'p.png', white_with_dark_line[..., None])
  image_io.write_image(tmp_path / 'scratch.png', np.zeros((30, 30, 1), np.float32))
  (tmp_path / 'readme.txt').write_text('not a texture')
  scratch, paper = textures.load_user_textures(str(tmp_path), 32)
  assert len(scratch) == 1 and len(paper) == 1
  assert paper[0].shape == (32, 32) and paper[0].max() > 150 and paper[0][:, :8].max() < 10
  b = textures.make_bank(1, 32, seed=0, texture_dir=str(tmp_path))
  assert b.paper.shape == (2, 32, 32)


# ----------------------------------------------------------------------------- data_prep
def _photos(tmp_path):
  from pikfix_jax import image_io  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'photos'
  for k in range(2):
    image_io.write_image(folder / f'p{k}.png', np.asarray(_smooth_image(40, 56, 3, seed=k)))
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
  return folder


def test_synthesize_old_photos_is_byte_identical_for_same_seed(tmp_path):
  from data_prep import synthesize_old_photos as synth  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data.degradation.num_textures = 2
  config.data.degradation.texture_size = 64
  photos = synth.photo_paths(str(_photos(tmp_path)))
  outputs = {}
  for name, seed in (('a', 5), ('b', 5), ('c', 6)):
    pairs = synth.synthesize(photos, str(tmp_path / name), seed, config)
    assert len(pairs) == 2  # The broken file is skipped.
    outputs[name] = [(tmp_path / name / kind / f'p{k}.png').read_bytes()
                     for kind in ('clean', 'degraded') for k in range(2)]
  assert outputs['a'] == outputs['b']
  assert outputs['a'][:2] == outputs['c'][:2]  # Clean copies do not depend on the seed...
  assert outputs['a'][2:] != outputs['c'][2:]  # ...the degraded ones do.
  grid = synth.example_grid(pairs, height=32)
  assert grid.dtype == np.uint8 and grid.shape[0] == 40


def test_make_textures_writes_bank_and_contact_sheet(tmp_path):
  from data_prep import make_textures  # pylint: disable=g-import-not-at-top
  paths = make_textures.write_bank(str(tmp_path), num=2, size=32, seed=0)
  assert len(paths) == 5 and paths[-1].endswith('contact_sheet.png')
  scratch, paper = textures.load_user_textures(str(tmp_path), 32)
  assert len(scratch) == 3 and len(paper) == 2  # contact_sheet.png counts as a scratch texture.
