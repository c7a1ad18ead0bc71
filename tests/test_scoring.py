"""pikfix_jax.scoring: baselines against scikit-image, the controls on predictors whose answer
is known, the summary and its Markdown."""

import numpy as np
import pytest
from skimage import color as skcolor
from skimage import data as skdata
from skimage import metrics as skmetrics

from pikfix_jax import scoring
from pikfix_jax.ops import color


def _batch(n=2, size=32, seed=0):
  """Crops of coffee as ground truth, their degraded-ish L as input, chelsea as reference."""
  rng = np.random.default_rng(seed)
  coffee = skdata.coffee()[100:100 + 2 * size:2, 200:200 + 2 * size * n:2] / 255.0
  chelsea = skdata.chelsea()[50:50 + size, 100:100 + size * n] / 255.0
  target = np.stack(np.split(coffee, n, axis=1)).astype(np.float32)
  reference = np.stack(np.split(chelsea, n, axis=1)).astype(np.float32)
  l, ab = (np.asarray(x) for x in color.rgb_to_lab_normalized(target))
  noisy = np.clip(l + rng.normal(0, 0.05, l.shape), 0, 1).astype(np.float32)
  return {'input_l': noisy, 'target_lab': np.concatenate([l, ab], -1),
          'reference_rgb': reference, 'id': np.array([b'a', b'b']),
          'mask': np.array([1.0, 1.0], np.float32)}


def test_tint_is_input_lightness_with_the_reference_mean_chroma():
  batch = _batch()
  out = scoring.tint(batch['input_l'], batch['reference_rgb'])
  for i in range(2):
    mean_ab = skcolor.rgb2lab(batch['reference_rgb'][i])[..., 1:].mean((0, 1))
    lab = np.concatenate([batch['input_l'][i] * 100,
                          np.broadcast_to(mean_ab, batch['input_l'][i].shape[:2] + (2,))], -1)
    np.testing.assert_allclose(out[i], np.clip(skcolor.lab2rgb(lab), 0, 1), atol=3e-3)
  grey = scoring.grey(batch['input_l'])
  np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-4)


def test_shuffle_keeps_colours_and_destroys_structure():
  batch = _batch()
  shuffled = scoring.shuffle_pixels(batch['reference_rgb'], [3, 4])
  for a, b in zip(batch['reference_rgb'], shuffled):
    np.testing.assert_array_equal(np.sort(a.reshape(-1, 3), 0), np.sort(b.reshape(-1, 3), 0))
    assert np.abs(a - b).mean() > 0.02
  np.testing.assert_array_equal(shuffled, scoring.shuffle_pixels(batch['reference_rgb'], [3, 4]))


def test_hue_angle_and_difference():
  np.testing.assert_allclose(scoring.hue_angle(np.array([[1.0, 0.0], [0.0, 1.0], [-1, -1e-9]])),
                             [0.0, 90.0, 180.0], atol=1e-6)
  np.testing.assert_allclose(scoring.angle_difference([350.0, 10.0, 90.0], [10.0, 350.0, 270.0]),
                             [20.0, 20.0, 180.0])


def _tint_model(l, reference):
  """Follows the reference exactly: its mean chroma everywhere; L kept."""
  ab = np.broadcast_to(scoring.mean_chroma(reference)[:, None, None], l.shape[:3] + (2,))
  return {'rgb': scoring.lab_to_rgb(l, ab), 'restored_l': l, 'ab': ab}


def _red_model(l, reference):
  """Ignores the reference: always red."""
  ab = np.broadcast_to(np.array([0.5, 0.3], np.float32), l.shape[:3] + (2,))
  return {'rgb': scoring.lab_to_rgb(l, ab), 'restored_l': l, 'ab': ab}


def test_scorer_rows_match_skimage_and_the_controls_tell_followers_from_priors():
  batch = _batch()
  scorer = scoring.Scorer(control_angles=scoring.CONTROL_ANGLES, restoration=True,
                          convention='skimage')
  records, _ = scorer.score_batch(_tint_model, batch)
  assert [r['id'] for r in records] == ['a', 'b'] and [r['index'] for r in records] == [0, 1]
  target = np.clip(skcolor.lab2rgb(np.concatenate(
      [batch['target_lab'][..., :1] * 100, batch['target_lab'][..., 1:] * 110], -1)), 0, 1)
  target8 = (target * 255 + 0.5).astype(np.uint8)
  grey8 = (np.clip(scoring.grey(batch['input_l']), 0, 1) * 255 + 0.5).astype(np.uint8)
  for i, r in enumerate(records):
    assert r[scoring.ZERO_CHROMA]['psnr'] == pytest.approx(
        skmetrics.peak_signal_noise_ratio(target8[i], grey8[i], data_range=255), abs=0.05)
    assert r[scoring.ZERO_CHROMA]['ssim'] == pytest.approx(skmetrics.structural_similarity(
        target8[i], grey8[i], channel_axis=-1, data_range=255), abs=2e-3)
    # The tint model is the tint baseline; a mean colour ignores where pixels are.
    assert r[scoring.MODEL] == r[scoring.TINT] == r[scoring.SHUFFLED]
    assert max(r['hue_error'].values()) < 1.0
    # It keeps the input's L: restored == degraded.
    assert r['restored_l_psnr'] == r['degraded_l_psnr']
    assert r['clean_output_psnr'] == pytest.approx(r['clean_input_l_output_psnr'])
  red, _ = scorer.score_batch(_red_model, batch)
  errors = [e for r in red for e in r['hue_error'].values()]
  assert max(errors) > 90 and np.mean(np.array(errors) <= scoring.HUE_TOLERANCE) <= 0.5

  # Against the tint alone the tint model never wins (ties are not wins).
  assert scoring.summarize(records, rows=(scoring.MODEL, scoring.TINT, scoring.ZERO_CHROMA))[
      'beats_best_baseline'] == 0.0
  summary = scoring.summarize(records)
  assert summary['images'] == 2 and summary['best_baseline'] in scoring.BASELINES
  assert '| Welsh et al. 2002 exemplar transfer (baseline) |' in scoring.summary_markdown(summary)
  assert summary['reference_control']['within_tolerance'] == 1.0
  assert summary['rows'][scoring.MODEL]['psnr'] == pytest.approx(
      np.mean([r[scoring.MODEL]['psnr'] for r in records]))
  text = scoring.summary_markdown(summary)
  assert '| input L + reference mean chroma (baseline) |' in text
  assert '100 % within 30°' in text and 'Restoration (L channel' in text


def test_masked_rows_are_not_scored():
  batch = _batch()
  batch['mask'] = np.array([1.0, 0.0], np.float32)
  records, _ = scoring.Scorer(rows=(scoring.MODEL,)).score_batch(_red_model, batch, first_index=4)
  assert [(r['id'], r['index']) for r in records] == [('a', 4)]
  with pytest.raises(ValueError, match='unknown score rows'):
    scoring.Scorer(rows=('model', 'oracle'))


def _welsh_loops(l, reference_rgb, ys, xs, window):
  """Welsh et al. 2002 written out pixel by pixel with scikit-image's Lab (the test's
  reference): remap, 5x5 standard deviations, nearest sample, its chroma."""
  ref = skcolor.rgb2lab(reference_rgb)
  rl, rab = ref[..., 0] / 100.0, ref[..., 1:] / 110.0
  rl = (rl - rl.mean()) * (l.std() / rl.std()) + l.mean()

  def local_std(img, y, x):
    r = window // 2
    pad = np.pad(img, r, mode='symmetric')
    return pad[y:y + window, x:x + window].std()

  samples = [(rl[y, x], local_std(rl, y, x), rab[y, x]) for y, x in zip(ys, xs)]
  ab = np.zeros(l.shape + (2,))
  for y in range(l.shape[0]):
    for x in range(l.shape[1]):
      f = (l[y, x], local_std(l, y, x))
      d = [0.5 * (f[0] - s[0]) ** 2 + 0.5 * (f[1] - s[1]) ** 2 for s in samples]
      ab[y, x] = samples[int(np.argmin(d))][2]
  return ab


def test_welsh_transfer_matches_a_pixel_by_pixel_transcription():
  batch = _batch(n=1, size=16)
  l, reference = batch['input_l'][:1], batch['reference_rgb'][:1]
  samples = 16
  out = scoring.welsh_transfer(l, reference, samples=samples, seed=5)
  # The same jittered grid as welsh_transfer draws (4 x 4 cells, seed 5).
  rng, h, w, cells = np.random.default_rng(5), 16, 16, 4
  ys = ((np.arange(cells)[:, None] + rng.random((cells, cells))) * h / cells).astype(int).ravel()
  xs = ((np.arange(cells)[None, :] + rng.random((cells, cells))) * w / cells).astype(int).ravel()
  expected_ab = _welsh_loops(l[0, ..., 0].astype(np.float64), reference[0], ys, xs, 5)
  got_ab = skcolor.rgb2lab(out[0])[..., 1:] / 110.0
  # Lab round trip through sRGB clipping aside, the chosen chroma is the transcription's.
  agree = np.mean(np.abs(got_ab - expected_ab).max(-1) < 0.02)
  assert agree > 0.95, agree


def test_welsh_transfer_colours_by_luminance_where_a_tint_cannot():
  """Dark pixels red, light pixels blue in the reference; the input's dark and light regions
  get those colours back, so Welsh beats the flat tint on the ground truth."""
  size = 32
  lab = np.zeros((size, size, 3))
  lab[:, :size // 2] = (30, 45, 30)   # dark red
  lab[:, size // 2:] = (75, -5, -40)  # light blue
  lab[..., 0] += np.random.default_rng(0).normal(0, 1.0, (size, size))
  truth = np.clip(skcolor.lab2rgb(lab), 0, 1).astype(np.float32)
  reference = truth[:, ::-1].copy()  # same colours, other places
  l = (skcolor.rgb2lab(truth)[..., :1] / 100.0).astype(np.float32)[None]
  welsh = scoring.welsh_transfer(l, reference[None])
  tint = scoring.tint(l, reference[None])
  psnr = lambda x: skmetrics.peak_signal_noise_ratio(truth, x[0], data_range=1.0)
  assert psnr(welsh) > psnr(tint) + 10, (psnr(welsh), psnr(tint))
