"""Tests for pikfix_jax/data: TF Lab, datasets, determinism, references, odd files, errors."""

import logging

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.color
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import default
from pikfix_jax.data import color_tf
from pikfix_jax.data import files
from pikfix_jax.data import input_pipeline as ip
from pikfix_jax.data import references
from pikfix_jax.data import sources
from pikfix_jax.ops import color as jax_color

SIZE = 32


def _config(dataset='demo', **data):
  c = default.get_config()
  c.dataset = dataset
  c.data.image_size = SIZE
  c.data.eval_image_size = SIZE
  c.data.degradation.num_textures = 2  # Small, fast texture bank.
  c.data.degradation.texture_size = 64
  for k, v in data.items():
    c.data[k] = v
  return c


def _batches(ds):
  return [{k: v for k, v in b.items()} for b in ds.as_numpy_iterator()]


def _check_train_batch(b, batch_size, size=SIZE):
  assert b['input_l'].shape == (batch_size, size, size, 1) and b['input_l'].dtype == np.float32
  assert b['target_lab'].shape == (batch_size, size, size, 3)
  assert b['reference_rgb'].shape == (batch_size, size, size, 3)
  assert b['id'].shape == (batch_size,) and b['id'].dtype == object
  for k in ('input_l', 'target_lab', 'reference_rgb'):
    assert np.isfinite(b[k]).all(), k
  assert 0 <= b['input_l'].min() and b['input_l'].max() <= 1
  assert 0 <= b['reference_rgb'].min() and b['reference_rgb'].max() <= 1
  assert -1 <= b['target_lab'][..., 1:].min() and b['target_lab'][..., 1:].max() <= 1


def _write_folder(root, colors, size=(40, 44)):
  """Solid-colour + noise PNGs, one per colour, named im{k}.png."""
  rng = np.random.default_rng(0)
  for k, c in enumerate(colors):
    arr = np.clip(np.array(c, np.float32)[None, None] + rng.integers(-3, 4, size + (3,)), 0, 255)
    Image.fromarray(arr.astype(np.uint8)).save(root / f'im{k}.png')
  return root


# -------------------------------------------------------------------------------- colour
def test_tf_lab_matches_skimage_and_jax():
  rng = np.random.default_rng(0)
  rgb = np.concatenate([rng.random((500, 3)), np.eye(3), [[0, 0, 0], [1, 1, 1], [0.01, 0.02, 0.03]]])
  rgb = rgb.astype(np.float32)
  lab = color_tf.rgb_to_lab(tf.constant(rgb)).numpy()
  np.testing.assert_allclose(lab, skimage.color.rgb2lab(rgb[None])[0], atol=2e-3)
  np.testing.assert_allclose(color_tf.lab_to_rgb(tf.constant(lab)).numpy(), rgb, atol=1e-4)
  np.testing.assert_allclose(color_tf.lab_to_rgb(tf.constant(lab)).numpy(),
                             skimage.color.lab2rgb(lab[None].astype(np.float64))[0], atol=1e-4)
  norm = color_tf.rgb_to_lab_normalized(tf.constant(rgb)).numpy()
  l, ab = jax_color.rgb_to_lab_normalized(jnp.asarray(rgb))
  np.testing.assert_allclose(norm, np.concatenate([l, ab], -1), atol=2e-5)


def test_tf_rotate_hue_matches_jax():
  rgb = np.random.default_rng(0).uniform(size=(6, 7, 3)).astype(np.float32)
  for angle in (0.0, 45.0, -170.0):
    np.testing.assert_allclose(color_tf.rotate_hue(tf.constant(rgb), angle).numpy(),
                               np.asarray(jax_color.rotate_hue(jnp.asarray(rgb), angle)),
                               atol=2e-5)


def test_luminance_gray_roundtrip_and_neutral():
  l = tf.constant(np.linspace(0, 1, 101, dtype=np.float32)[:, None])
  gray = color_tf.luminance_to_gray(l)
  np.testing.assert_allclose(color_tf.gray_to_luminance(gray), l, atol=1e-5)
  rgb = tf.tile(gray, [1, 3])  # The grey of lightness L has L* = L and a = b = 0.
  lab = color_tf.rgb_to_lab_normalized(rgb).numpy()
  np.testing.assert_allclose(lab[:, 0], l[:, 0], atol=1e-4)
  np.testing.assert_allclose(lab[:, 1:], 0.0, atol=1e-3)


# ---------------------------------------------------------------------------------- demo
def test_demo_train_and_eval_batches():
  c = _config('demo', train_repeats=2, degrade=True)
  assert ip.num_examples(c, 'train') == 7 and ip.num_examples(c, 'validation') == 2
  batches = _batches(ip.train_dataset(c, epoch=0, batch_size=4))
  assert len(batches) == 3  # 14 examples // 4.
  _check_train_batch(batches[0], 4)
  ids = {i.decode() for b in batches for i in b['id']}
  assert ids <= {n.split('.')[0] for n in sources.DEMO_TRAIN}
  assert 'mask' not in batches[0]
  # Degradation changes the input luminance away from the clean target's.
  assert np.abs(batches[0]['input_l'] - batches[0]['target_lab'][..., :1]).mean() > 0.01
  evals = _batches(ip.eval_dataset(c, batch_size=3))
  assert len(evals) == 1
  np.testing.assert_array_equal(evals[0]['mask'], [1, 1, 0])
  assert [i.decode() for i in evals[0]['id']] == ['chelsea', 'coffee', '']
  assert evals[0]['input_l'].shape == (3, SIZE, SIZE, 1)
  np.testing.assert_array_equal(evals[0]['input_l'][2], 0)


def test_training_hue_rotation_turns_target_and_reference_together():
  plain = _config('demo', train_repeats=1, reference_strategies=(1,))
  turned = _config('demo', train_repeats=1, reference_strategies=(1,), hue_rotation=180.0)
  a = _batches(ip.train_dataset(plain, epoch=0, batch_size=7))[0]
  b = _batches(ip.train_dataset(turned, epoch=0, batch_size=7))[0]
  # Same crops and lightness (up to gamut clipping), other colours.
  assert np.abs(a['target_lab'][..., 0] - b['target_lab'][..., 0]).mean() < 0.01
  assert np.abs(a['target_lab'][..., 1:] - b['target_lab'][..., 1:]).mean() > 0.02
  # Each example's target and reference turned by the same angle: the change of the mean
  # chroma's hue agrees between target and reference.
  def hue(ab):
    return np.degrees(np.arctan2(ab[..., 1].mean((1, 2)), ab[..., 0].mean((1, 2))))
  ref_ab = lambda rgb: np.asarray(jax_color.rgb_to_lab_normalized(jnp.asarray(rgb))[1])
  turn_target = hue(b['target_lab'][..., 1:]) - hue(a['target_lab'][..., 1:])
  turn_reference = hue(ref_ab(b['reference_rgb'])) - hue(ref_ab(a['reference_rgb']))
  chromatic = np.hypot(*a['target_lab'][..., 1:].mean((1, 2)).T) > 0.03
  difference = (turn_target - turn_reference + 180) % 360 - 180
  assert chromatic.sum() >= 3 and np.all(np.abs(difference[chromatic]) < 25)
  assert np.std(turn_target[chromatic]) > 10  # not one fixed angle


def test_eval_hue_rotations_score_each_image_at_each_angle():
  c = _config('demo', eval_reference='self', eval_hue_rotations=(0.0, 120.0))
  evals = _batches(ip.eval_dataset(c, batch_size=4))
  assert [i.decode() for i in evals[0]['id']] == ['chelsea', 'chelsea@hue120', 'coffee',
                                                 'coffee@hue120']
  lab = evals[0]['target_lab']
  np.testing.assert_allclose(lab[1, ..., 0], lab[0, ..., 0], atol=0.02)
  turn = lambda ab: np.degrees(np.arctan2(ab[..., 1].mean(), ab[..., 0].mean()))
  assert abs((turn(lab[1, ..., 1:]) - turn(lab[0, ..., 1:]) - 120 + 180) % 360 - 180) < 15
  # The reference ('self') is the rotated ground truth.
  ref_lab = np.concatenate(jax_color.rgb_to_lab_normalized(
      jnp.asarray(evals[0]['reference_rgb'])), -1)
  np.testing.assert_allclose(ref_lab[1], lab[1], atol=0.02)
  with pytest.raises(ValueError, match='eval_hue_rotations'):
    ip.eval_dataset(_config('demo', eval_hue_rotations=()), batch_size=2)


def test_same_seed_same_batches_different_seed_or_epoch_different():
  c = _config('demo', train_repeats=1, degrade=True, reference_strategies=(1,))
  first = _batches(ip.train_dataset(c, epoch=0, batch_size=2))
  again = _batches(ip.train_dataset(c, epoch=0, batch_size=2))
  for a, b in zip(first, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  other_epoch = _batches(ip.train_dataset(c, epoch=1, batch_size=2))
  c.seed = 1
  other_seed = _batches(ip.train_dataset(c, epoch=0, batch_size=2))
  for other in (other_epoch, other_seed):
    assert not np.array_equal(first[0]['input_l'], other[0]['input_l'])


def test_train_batches_continue_epoch_after_epoch_from_any_step():
  c = _config('demo', train_repeats=1, degrade=False, reference_strategies=(1,))
  spe = 2  # of the 3 batches of 2 the demo split has: the third batch of an epoch is never used
  epochs = [_batches(ip.train_dataset(c, epoch=e, batch_size=2))[:spe] for e in range(3)]
  expected = [b for epoch in epochs for b in epoch]  # global steps 0..5
  for start_step in (0, 3):  # from the start, and resumed mid-epoch
    batches = ip.train_batches(c, start_step=start_step, steps_per_epoch=spe, batch_size=2)
    got = [next(batches) for _ in range(len(expected) - start_step)]
    batches.close()
    for a, b in zip(got, expected[start_step:], strict=True):
      np.testing.assert_array_equal(a['input_l'], b['input_l'])
      np.testing.assert_array_equal(a['id'], b['id'])


def test_eval_is_deterministic_and_independent_of_training_seed():
  c = _config('demo', degrade=True)
  a = _batches(ip.eval_dataset(c, batch_size=2))
  c.seed = 5
  b = _batches(ip.eval_dataset(c, batch_size=2))
  np.testing.assert_array_equal(a[0]['input_l'], b[0]['input_l'])
  assert np.abs(a[0]['input_l'] - a[0]['target_lab'][..., :1]).mean() > 0.01  # Degraded.


def test_full_size_eval_needs_batch_one():
  c = _config('demo', eval_image_size=0)
  with pytest.raises(ValueError, match='batch_size 1'):
    ip.eval_dataset(c, batch_size=2)
  batches = _batches(ip.eval_dataset(c, batch_size=1))
  assert [b['target_lab'].shape for b in batches] == [(1, 300, 451, 3), (1, 400, 600, 3)]
  assert batches[0]['reference_rgb'].shape == (1, SIZE, SIZE, 3)


# ---------------------------------------------------------- Wan et al.: defect mask, domain R
@pytest.mark.slow
def test_defect_mask_adds_a_field_and_changes_nothing_else():
  """data.defect_mask: same batches bit for bit plus `defect_mask` in {0, 1}; zero for clean
  examples (clean_prob), padding rows and undegraded data."""
  off = _config('demo', train_repeats=2, degrade=True, reference_strategies=(1,))
  off.data.degradation.clean_prob = 0.5
  on = _config('demo', train_repeats=2, degrade=True, reference_strategies=(1,), defect_mask=True)
  on.data.degradation.clean_prob = 0.5
  for make in (lambda c: ip.train_dataset(c, epoch=0, batch_size=7),
               lambda c: ip.eval_dataset(c, batch_size=3)):
    (a, *_), (b, *_) = _batches(make(off)), _batches(make(on))
    assert set(b) - set(a) == {'defect_mask'}
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
    mask = b['defect_mask']
    assert mask.dtype == np.float32 and mask.shape == b['input_l'].shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    marked = mask.reshape(len(mask), -1).max(1) > 0
    clean = np.all(b['input_l'] == b['target_lab'][..., :1], axis=(1, 2, 3))
    assert marked.any() and not np.any(marked & clean)
  np.testing.assert_array_equal(mask[2], 0.0)  # The evaluation padding row.
  assert 'defect_mask' not in a
  on.data.degrade = False
  b = _batches(ip.train_dataset(on, epoch=0, batch_size=7))[0]
  np.testing.assert_array_equal(b['defect_mask'], np.zeros_like(b['input_l']))


def _real_old_folder(root):
  """Uniform grey photos of four levels (one colour, one small, one in a subfolder) and junk."""
  (root / 'sub').mkdir(parents=True)
  for name, value, size in (('a.png', 40, (50, 60)), ('b.jpg', 120, (SIZE - 8, SIZE - 4)),
                            ('sub/c.png', 200, (40, 40))):
    Image.new('L', size[::-1], value).save(root / name)
  Image.new('RGB', (45, 45), (160, 120, 80)).save(root / 'sepia.png')
  (root / 'notes.txt').write_text('not an image')
  rgb = np.array([[40] * 3, [120] * 3, [200] * 3, [160, 120, 80]], np.float32) / 255.0
  return color_tf.rgb_to_lab_normalized(tf.constant(rgb)).numpy()[:, 0]


def test_real_old_crops_are_seeded_luminance_crops(tmp_path):
  levels = _real_old_folder(tmp_path / 'old')
  plain = _config('demo', train_repeats=2, reference_strategies=(1,))
  c = _config('demo', train_repeats=2, reference_strategies=(1,),
              real_old_dir=str(tmp_path / 'old'))
  first = _batches(ip.train_dataset(c, epoch=0, batch_size=7))
  again = _batches(ip.train_dataset(c, epoch=0, batch_size=7))
  other = _batches(ip.train_dataset(c, epoch=1, batch_size=7))
  without = _batches(ip.train_dataset(plain, epoch=0, batch_size=7))
  for a, b, w in zip(first, again, without, strict=True):
    assert set(a) - set(w) == {'real_l'}
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])  # Deterministic (and so resumable).
    for k in w:
      np.testing.assert_array_equal(a[k], w[k], err_msg=k)  # The other draws are untouched.
  real = np.concatenate([b['real_l'] for b in first])
  assert real.shape == (14, SIZE, SIZE, 1) and real.dtype == np.float32
  assert 0.0 <= real.min() and real.max() <= 1.0
  # Every crop is one photo's lightness (L/100, as input_l); several photos are drawn.
  source = np.argmin(np.abs(real.mean((1, 2, 3))[:, None] - levels[None]), axis=1)
  np.testing.assert_allclose(real, np.broadcast_to(levels[source][:, None, None, None],
                                                  real.shape), atol=2e-3)
  assert len(set(source)) >= 3
  assert not np.array_equal(first[0]['real_l'], other[0]['real_l'])


def test_real_old_dir_errors_name_the_field(tmp_path):
  c = _config('demo', train_repeats=2, real_old_dir=str(tmp_path / 'nope'))
  with pytest.raises(sources.DataNotFoundError, match=r'config.data.real_old_dir=.*not a folder'):
    ip.train_dataset(c, epoch=0, batch_size=2)
  (tmp_path / 'junk').mkdir()
  (tmp_path / 'junk' / 'notes.txt').write_text('not an image')
  c.data.real_old_dir = str(tmp_path / 'junk')
  with pytest.raises(sources.DataNotFoundError, match=r'config.data.real_old_dir=.*no readable'):
    ip.train_dataset(c, epoch=0, batch_size=2)


# --------------------------------------------------------------------- image_folder etc.
def test_process_shards_are_disjoint_and_equal(tmp_path):
  root = _write_folder(tmp_path, [(20 * k, 100, 200 - 20 * k) for k in range(10)])
  c = _config('image_folder', image_folder=str(root), val_fraction=0.2)
  assert ip.num_examples(c, 'train') == 8 and ip.num_examples(c, 'validation') == 2
  shards = [_batches(ip.train_dataset(c, epoch=3, batch_size=2, process_index=p, process_count=3))
            for p in range(3)]
  assert [len(s) for s in shards] == [1, 1, 1]  # 8 // 3 = 2 examples each.
  ids = [i for s in shards for b in s for i in b['id']]
  assert len(ids) == len(set(ids)) == 6
  evals = [_batches(ip.eval_dataset(c, batch_size=2, process_index=p, process_count=3))
           for p in range(3)]
  assert [len(e) for e in evals] == [1, 1, 1]
  real = [i for e in evals for b in e for i, m in zip(b['id'], b['mask']) if m]
  assert sorted(real) == sorted(set(real)) and len(real) == 2


def test_split_is_seeded_and_disjoint(tmp_path):
  root = _write_folder(tmp_path, [(10 * k, 50, 50) for k in range(10)])
  c = _config('image_folder', image_folder=str(root), val_fraction=0.3)
  train = set(sources.get_split(c, 'train').ids)
  val = set(sources.get_split(c, 'validation').ids)
  assert len(val) == 3 and not train & val and len(train | val) == 10
  c.data.split_seed = 1
  assert set(sources.get_split(c, 'validation').ids) != val


def test_strategy1_offset_never_the_input_location():
  seen = set()
  for k in range(300):
    y, x = 1, 2
    ry, rx = references.other_crop_offset(tf.constant([k, 0]), 34, 35, 32, y, x)
    seen.add((int(ry), int(rx)))
  assert (1, 2) not in seen and len(seen) == 3 * 4 - 1  # Every other position is reachable.


def test_strategy1_max_shift_keeps_the_reference_crop_near_the_input():
  seen = set()
  for k in range(400):
    ry, rx = references.other_crop_offset(tf.constant([k, 1]), 100, 60, 32, 3, 20, max_shift=4)
    seen.add((int(ry), int(rx)))
  # Rows 0..7 (clipped at the top), columns 16..24, never (3, 20).
  expected = {(y, x) for y in range(0, 8) for x in range(16, 25)} - {(3, 20)}
  assert seen == expected


def test_strategy1_reference_is_another_crop_of_the_same_image(tmp_path):
  rng = np.random.default_rng(1)
  for k in range(2):
    Image.fromarray((rng.random((SIZE + 1, SIZE + 2, 3)) * 255).astype(np.uint8)).save(
        tmp_path / f'n{k}.png')
  c = _config('image_folder', image_folder=str(tmp_path), val_fraction=0.0,
              reference_strategies=(1,), train_repeats=8)
  for k in ('jitter_brightness', 'jitter_contrast', 'jitter_saturation', 'jitter_hue',
            'affine_max_rotation', 'affine_max_scale', 'affine_max_shear'):
    c.data[k] = 0.0
  images = {i.decode(): tf.image.convert_image_dtype(im, tf.float32).numpy()
            for im, i in ((e['image'], e['id']) for e in ip.images(c, 'train').as_numpy_iterator())}
  for b in _batches(ip.train_dataset(c, epoch=0, batch_size=4)):
    for l, ref, name in zip(b['target_lab'][..., 0], b['reference_rgb'], b['id']):
      image = images[name.decode()]
      crops = {(y, x): image[y:y + SIZE, x:x + SIZE] for y in range(2) for x in range(3)}
      own = [p for p, crop in crops.items()
             if np.abs(color_tf.rgb_to_lab_normalized(crop).numpy()[..., 0] - l).max() < 1e-5]
      ref_at = [p for p, crop in crops.items() if np.abs(crop - ref).max() < 1e-5]
      assert len(own) == 1 and len(ref_at) == 1 and own != ref_at


def _own_and_reference_colors(batches):
  out = []
  for b in batches:
    for target, ref in zip(b['target_lab'], b['reference_rgb']):
      out.append((target[..., 0].mean(), color_tf.rgb_to_lab_normalized(ref).numpy()[..., 0].mean()))
  return out


def test_strategy2_never_the_image_itself(tmp_path):
  # Eight images of clearly different lightness: the reference's lightness names its source.
  root = _write_folder(tmp_path, [(30 * k, 30 * k, 30 * k) for k in range(8)])
  c = _config('image_folder', image_folder=str(root), val_fraction=0.0,
              reference_strategies=(2,), train_repeats=4)
  pairs = _own_and_reference_colors(_batches(ip.train_dataset(c, epoch=0, batch_size=8)))
  assert len(pairs) == 32
  assert all(abs(own - ref) > 0.05 for own, ref in pairs)
  assert len({round(ref, 1) for _, ref in pairs}) >= 6  # Random others, not a fixed one.


def _save_index(path, paths, neighbors):
  """A file in the format of pikfix_jax.retrieval.build_index (only the arrays we read)."""
  np.savez(path, paths=np.array([str(p) for p in paths]), neighbors=np.asarray(neighbors))


def test_strategy2_uses_retrieval_neighbors_but_never_self(tmp_path):
  root = tmp_path / 'photos'
  root.mkdir()
  _write_folder(root, [(30 * k, 30 * k, 30 * k) for k in range(6)])
  c = _config('image_folder', image_folder=str(root), val_fraction=0.0,
              reference_strategies=(2,), retrieval_top_k=2, train_repeats=2)
  ids = sources.get_split(c, 'train').ids
  n = len(ids)
  # Index rows in reverse order; row r lists itself first (must be skipped), then the row of
  # the next training image, then padding.
  paths = [root / i for i in ids[::-1]]
  row = {i: n - 1 - k for k, i in enumerate(ids)}
  neighbors = [[row[ids[k]], row[ids[(k + 1) % n]], -1] for k in range(n)][::-1]
  _save_index(tmp_path / 'index.npz', paths, neighbors)
  c.data.retrieval_index = str(tmp_path / 'index.npz')
  lightness = {}
  for e in ip.images(c, 'train').as_numpy_iterator():
    lightness[e['id'].decode()] = color_tf.rgb_to_lab_normalized(
        tf.image.convert_image_dtype(e['image'], tf.float32)).numpy()[..., 0].mean()
  order = [lightness[i] for i in ids]
  pairs = _own_and_reference_colors(_batches(ip.train_dataset(c, epoch=1, batch_size=4)))
  assert len(pairs) == 12
  for own, ref in pairs:
    k = int(np.argmin(np.abs(np.array(order) - own)))
    assert abs(ref - order[(k + 1) % n]) < 0.02
  _save_index(tmp_path / 'other.npz', [tmp_path / 'elsewhere' / i for i in ('x.png', 'y.png')],
              [[1], [0]])
  c.data.retrieval_index = str(tmp_path / 'other.npz')
  with pytest.raises(ValueError, match='none of the 6 images'):
    ip.train_dataset(c, epoch=1, batch_size=4)


def test_eval_reference_from_retrieval_index(tmp_path):
  root = tmp_path / 'p'
  root.mkdir()
  _write_folder(root, [(40 * k, 40 * k, 40 * k) for k in range(6)])
  c = _config('image_folder', image_folder=str(root), val_fraction=0.5,
              eval_reference_query='image')
  train_ids = sources.get_split(c, 'train').ids
  val_ids = sources.get_split(c, 'validation').ids
  # Index over train + the first two val images; their neighbours: another val image (not a
  # training image: skipped), then training image 1. The third val image is not indexed.
  paths = [root / i for i in train_ids + val_ids[:2]]
  n = len(train_ids)
  neighbors = [[0, 1]] * n + [[n + 1, 1], [n, 1]]
  _save_index(tmp_path / 'index.npz', paths, neighbors)
  c.data.retrieval_index = str(tmp_path / 'index.npz')
  train_pool = ip.reference_pool(c, 'train', SIZE).numpy()
  (b,) = _batches(ip.eval_dataset(c, batch_size=3))
  for k in range(2):
    np.testing.assert_allclose(b['reference_rgb'][k], train_pool[1] / 255.0, atol=1e-6)
  assert np.abs(b['reference_rgb'][2] - train_pool[1] / 255.0).max() > 0.05  # Another val image.
  c.data.eval_reference = 'self'
  (b,) = _batches(ip.eval_dataset(c, batch_size=3))
  np.testing.assert_allclose(color_tf.rgb_to_lab_normalized(b['reference_rgb']).numpy(),
                             b['target_lab'], atol=2e-3)


@pytest.mark.slow
def test_eval_reference_is_retrieved_for_the_crop_not_the_whole_photo(tmp_path):
  """An evaluation photo whose centre looks like training photo A and whose border like B: the
  whole photo's index row retrieves B, the evaluation crop (the default query) retrieves A."""
  from pikfix_jax import retrieval  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'p'
  (root / 'train').mkdir(parents=True)
  (root / 'val').mkdir()
  rng = np.random.default_rng(0)
  stripes = np.where((np.arange(96) // 4) % 2, 40, 90)[:, None, None] * np.ones((96, 96, 3))
  flat = np.full((96, 96, 3), 220.0)
  photo = stripes.copy()
  photo[32:64, 32:64] = 220.0  # The 32 px evaluation crop is flat and light.
  for name, image in (('train/a.png', flat), ('train/b.png', stripes), ('val/c.png', photo)):
    noisy = np.clip(image + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(root / name)
  index = tmp_path / 'index.npz'
  retrieval.build_index([str(root / n) for n in ('train/a.png', 'train/b.png', 'val/c.png')],
                        str(index), batch_size=4, image_size=64)
  c = _config('image_folder', image_folder=str(root), val_fraction=0.0,
              retrieval_index=str(index))
  # image_folder splits by a seeded fraction; here by hand: train = a, b; evaluation = c.
  scanned, _ = files.scan_folder(str(root), min_size=32)
  train = sources.file_split('image_folder', 'train',
                             [f for f in scanned if f.id.startswith('train/')])
  val = sources.file_split('image_folder', 'validation',
                           [f for f in scanned if f.id.startswith('val/')])
  a = train.ids.index('train/a.png')
  assert ip.crop_references(c, val, train).tolist() == [a]
  whole = references.load_neighbors(str(index), val.ids, train.ids, 1, exclude_self=False)
  assert whole[:, 0].tolist() == [1 - a]


def test_odd_files_are_decoded_or_skipped_with_one_warning_each(tmp_path, caplog):
  rng = np.random.default_rng(0)
  rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'rgb.png')
  Image.fromarray(rgb[..., 0]).save(tmp_path / 'gray.jpg')
  Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(tmp_path / 'deep16.png')
  rgba = np.dstack([rgb, np.zeros((40, 48), np.uint8)])  # Fully transparent -> white.
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
  Image.new('CMYK', (40, 40), (0, 255, 255, 0)).save(tmp_path / 'cmyk.jpg')
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(rgb).save(tmp_path / 'rotated.jpg', exif=exif.tobytes())
  Image.fromarray(rgb[:20, :20]).save(tmp_path / 'small.png')  # Smaller than the crop.
  Image.fromarray(rgb).save(tmp_path / 'full.jpg')
  data = (tmp_path / 'full.jpg').read_bytes()
  (tmp_path / 'full.jpg').unlink()
  (tmp_path / 'truncated.jpg').write_bytes(data[:len(data) // 2])
  (tmp_path / 'notes.txt').write_text('not an image')
  png = (tmp_path / 'rgb.png').read_bytes()
  (tmp_path / 'cut.png').write_bytes(png[:len(png) // 2])
  good = {'rgb.png', 'gray.jpg', 'deep16.png', 'rgba.png', 'cmyk.jpg', 'rotated.jpg', 'small.png'}

  c = _config('image_folder', image_folder=str(tmp_path), val_fraction=0.0, train_repeats=2,
              degrade=True)
  with caplog.at_level(logging.WARNING):
    got = {e['id'].decode(): e['image'] for e in ip.images(c, 'train').as_numpy_iterator()}
  assert set(got) == good
  warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  for bad in ('truncated.jpg', 'notes.txt', 'cut.png'):
    assert sum(bad in m for m in warned) == 1, (bad, warned)
  assert len(warned) == 3
  np.testing.assert_array_equal(got['rgb.png'], rgb)
  assert got['rotated.jpg'].shape == (48, 40, 3)
  np.testing.assert_array_equal(got['deep16.png'], round(40000 / 65535 * 255))
  np.testing.assert_array_equal(got['rgba.png'], 255)
  assert np.abs(got['cmyk.jpg'][20, 20].astype(int) - [255, 0, 0]).max() < 15
  np.testing.assert_array_equal(got['gray.jpg'][..., 0], got['gray.jpg'][..., 2])
  # A whole epoch over them: no crash, no NaN, the small image is resized up.
  for b in _batches(ip.train_dataset(c, epoch=0, batch_size=2)) + _batches(
      ip.train_dataset(c, epoch=1, batch_size=2)):
    _check_train_batch(b, 2)


# ------------------------------------------------------------------------- tfds datasets
def test_div2k_pipeline_with_mock_data(tmp_path):
  c = _config('div2k', data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=5):
    assert ip.num_examples(c, 'train') == 5
    train = _batches(ip.train_dataset(c, epoch=0, batch_size=2))
    again = _batches(ip.train_dataset(c, epoch=0, batch_size=2))
    other = _batches(ip.train_dataset(c, epoch=1, batch_size=2))
    shards = [_batches(ip.train_dataset(c, epoch=0, batch_size=1, process_index=p,
                                        process_count=2)) for p in range(2)]
    evals = _batches(ip.eval_dataset(c, batch_size=2))
  assert len(train) == 2
  _check_train_batch(train[0], 2)
  np.testing.assert_array_equal(train[1]['input_l'], again[1]['input_l'])
  assert not np.array_equal(train[0]['reference_rgb'], other[0]['reference_rgb'])
  ids = [set(i for b in s for i in b['id']) for s in shards]
  assert len(shards[0]) == len(shards[1]) == 2 and not ids[0] & ids[1]
  assert len(evals) == 3 and evals[-1]['mask'].tolist() == [1, 0]
  assert all(i.startswith(b'div2k-') for i in train[0]['id'])
  c.data.cache = True  # Decoded once into memory: random access, exact permutation.
  with tfds.testing.mock_data(num_examples=5):
    assert sources.get_split(c, 'train').lookup is not None
    cached = _batches(ip.train_dataset(c, epoch=0, batch_size=2))
  cached_ids = [i for b in cached for i in b['id']]
  assert len(set(cached_ids)) == 4 and all(i.startswith(b'div2k-') for i in cached_ids)


def test_voc_subset_with_mock_data(tmp_path):
  c = _config('voc', data_dir=str(tmp_path), voc_num_train=4, voc_num_test=2, degrade=True)
  with tfds.testing.mock_data(num_examples=7):
    assert ip.num_examples(c, 'train') == 4 and ip.num_examples(c, 'test') == 2
    train_ids = {e['id'] for e in ip.images(c, 'train').as_numpy_iterator()}
    test_ids = {e['id'] for e in ip.images(c, 'test').as_numpy_iterator()}
    batches = _batches(ip.train_dataset(c, epoch=1, batch_size=2))
    c.data.voc_num_train = 6
    with pytest.raises(ValueError, match='exceeds'):
      ip.num_examples(c, 'train')
  assert len(train_ids) == 4 and len(test_ids) == 2 and not train_ids & test_ids
  assert len(batches) == 2
  _check_train_batch(batches[0], 2)


def _ids(config, split):
  return [e['id'].decode() for e in ip.images(config, split).as_numpy_iterator()]


@pytest.mark.parametrize('dataset', ['demo', pytest.param('div2k', marks=pytest.mark.slow)])
def test_selection_split_is_held_out_of_training(tmp_path, dataset):
  """data.selection_size images leave 'train' for 'selection' (random-access demo, sequential
  tfds div2k); the evaluation split is untouched; the draw follows data.split_seed."""
  c = _config(dataset, data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=6):
    everything = _ids(c, 'train')
    evaluation = _ids(c, 'validation')
    c.data.selection_size = 2
    train, selection = _ids(c, 'train'), _ids(c, 'selection')
    assert ip.num_examples(c, 'train') == len(everything) - 2 == len(train)
    assert len(selection) == 2 and not set(train) & set(selection)
    assert sorted(train + selection) == sorted(everything)
    assert [i for i in everything if i in train] == train  # canonical order kept
    assert _ids(c, 'validation') == evaluation
    assert sources.validation_split(c) == 'selection'
    batches = _batches(ip.eval_dataset(c, batch_size=1, split='selection'))
    assert {b['id'][0].decode() for b in batches} == set(selection)
    c.data.split_seed = 1
    draws = {tuple(_ids(c, 'selection'))}
    c.data.split_seed = 2
    draws.add(tuple(_ids(c, 'selection')))
    assert len(draws | {tuple(selection)}) > 1
    c.data.selection_size = len(everything)
    with pytest.raises(ValueError, match=r'config.data.selection_size=\d+ must be in'):
      ip.num_examples(c, 'train')
  c.data.selection_size = 0
  assert sources.validation_split(c) == 'validation'
  with pytest.raises(ValueError, match='selection_size'):
    sources.get_split(c, 'selection')


def test_realold_from_manual_dir(tmp_path):
  manual = tmp_path / 'manual'
  rng = np.random.default_rng(0)
  for name, size in (('a', (40, 50)), ('b', (36, 36)), ('c', (40, 40))):
    restored = (rng.random(size + (3,)) * 255).astype(np.uint8)
    (manual / 'old').mkdir(parents=True, exist_ok=True)
    Image.fromarray(restored.mean(-1).astype(np.uint8)).save(manual / 'old' / f'{name}.jpg')
    if name != 'c':  # c has no restored partner: skipped.
      (manual / 'restored').mkdir(exist_ok=True)
      Image.fromarray(restored[::2, ::2] if name == 'b' else restored).save(
          manual / 'restored' / f'{name}.png')
  (manual / 'reference').mkdir()
  Image.new('RGB', (20, 30), (0, 0, 255)).save(manual / 'reference' / 'a.png')
  c = _config('realold', data_dir=str(tmp_path / 'tfds'), manual_dir=str(manual))
  with pytest.raises(ValueError, match='test only'):
    ip.num_examples(c, 'train')
  assert ip.num_examples(c, 'test') == 2
  (b,) = _batches(ip.eval_dataset(c, batch_size=2))
  assert [i.decode() for i in b['id']] == ['a', 'b']
  np.testing.assert_allclose(b['reference_rgb'][0], np.broadcast_to([0, 0, 1], (SIZE, SIZE, 3)),
                             atol=1e-6)  # a's own reference.
  assert np.abs(b['reference_rgb'][1] - [0, 0, 1]).max() > 0.1  # b: another photo instead.
  # The input is the old photo, not the restored one: grey, but a different image.
  assert np.abs(b['input_l'] - b['target_lab'][..., :1]).mean() > 0.01


def test_missing_data_errors_say_where_and_how(tmp_path):
  with pytest.raises(sources.DataNotFoundError, match=r'tfds build div2k --data_dir='):
    ip.num_examples(_config('div2k', data_dir=str(tmp_path)), 'train')
  with pytest.raises(sources.DataNotFoundError, match=r'tfds build voc/2012'):
    ip.num_examples(_config('voc', data_dir=str(tmp_path)), 'train')
  with pytest.raises(sources.DataNotFoundError, match=r'DIR/old/<name>'):
    ip.num_examples(_config('realold', data_dir=str(tmp_path)), 'test')
  with pytest.raises(sources.DataNotFoundError, match='image_folder'):
    ip.num_examples(_config('image_folder', image_folder=str(tmp_path / 'nope')), 'train')


def test_tiny_dataset_error_names_the_fix():
  c = _config('demo')
  with pytest.raises(ValueError, match='train_repeats'):
    ip.train_dataset(c, epoch=0, batch_size=8)
