"""Scores a reference-based colourisation beside controls and trivial baselines.

Every row is scored on the same inputs, references, ground truths and metric conventions
(`pikfix_jax.metrics`, 8-bit sRGB), so a model's number always has the line to beat beside it:

* `model`: the model with the batch's reference.
* `shuffled_reference`: the model with the same reference, its pixels permuted (same
  colours, no structure): what the model gains from *where* the reference's colours are.
* `tint`: the input's luminance, every pixel given the reference's mean (a, b): what a flat
  tint from the reference already gets.
* `welsh`: the classical non-learned exemplar transfer for grey images (Welsh, Ashikhmin and
  Mueller 2002, "Transferring color to greyscale images"; `welsh_transfer`). A global
  colour-statistics transfer (Reinhard et al. 2001) reduces to `tint` for a grey input.
* `zero_chroma`: the input's luminance as a grey image.
* `restored_zero_chroma`: the model's restored luminance as a grey image (isolates the
  restoration sub-net).

Two checks ask what the model does with its inputs:

* Reference control (`control_angles`): the reference is hue-rotated by each angle, the
  ground truth is not; the hue angle of the output's mean chroma should follow the
  reference's (within `HUE_TOLERANCE` degrees).
* Restoration (L channel, 8-bit): restored vs degraded luminance against the clean one; and
  with the clean luminance as input, the output against the same output whose L is replaced
  by the input's (what the restoration sub-net costs on a clean photo).

Used by training-time validation (`pikfix_jax.train`) and by `python -m pikfix_jax.evaluate`.
"""

import math
from typing import Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from pikfix_jax import metrics
from pikfix_jax.ops import color

MODEL = 'model'
SHUFFLED = 'shuffled_reference'
TINT = 'tint'
WELSH = 'welsh'
ZERO_CHROMA = 'zero_chroma'
RESTORED_ZERO_CHROMA = 'restored_zero_chroma'
BASELINES = (TINT, WELSH, ZERO_CHROMA, RESTORED_ZERO_CHROMA)
ROWS = (MODEL, SHUFFLED) + BASELINES
LABELS = {MODEL: 'model', SHUFFLED: 'model, shuffled reference (control)',
          TINT: 'input L + reference mean chroma (baseline)',
          WELSH: 'Welsh et al. 2002 exemplar transfer (baseline)',
          ZERO_CHROMA: 'input L, zero chroma (baseline)',
          RESTORED_ZERO_CHROMA: 'restored L, zero chroma (baseline)'}
CONTROL_ANGLES = (0.0, 90.0, 180.0, 270.0)
HUE_TOLERANCE = 30.0  # degrees

# (input_l (B, H, W, 1), reference_rgb (B, R, R, 3)) -> {'rgb', 'restored_l', 'ab'} (NumPy).
Predict = Callable[[np.ndarray, np.ndarray], dict]


@jax.jit
def _lab_to_rgb(l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
  return color.lab_normalized_to_rgb(l, ab)


@jax.jit
def _rgb_to_lab(rgb: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  return color.rgb_to_lab_normalized(rgb)


@jax.jit
def _rotate_hue(rgb: jnp.ndarray, degrees: jnp.ndarray) -> jnp.ndarray:
  return color.rotate_hue(rgb, degrees[:, None, None])


def lab_to_rgb(l: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """Normalised (L, ab) -> float sRGB in [0, 1] (NumPy)."""
  return np.asarray(_lab_to_rgb(jnp.asarray(l, jnp.float32), jnp.asarray(ab, jnp.float32)))


def mean_chroma(rgb: np.ndarray) -> np.ndarray:
  """(B, H, W, 3) sRGB -> (B, 2) mean normalised (a, b) of each image."""
  _, ab = _rgb_to_lab(jnp.asarray(rgb, jnp.float32))
  return np.asarray(jnp.mean(ab, axis=(1, 2)))


def hue_angle(ab: np.ndarray) -> np.ndarray:
  """(..., 2) chroma -> hue angle atan2(b, a) in degrees, [0, 360)."""
  return np.degrees(np.arctan2(ab[..., 1], ab[..., 0])) % 360.0


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """|a - b| on the circle, degrees in [0, 180]."""
  d = np.abs(np.asarray(a) - np.asarray(b)) % 360.0
  return np.minimum(d, 360.0 - d)


def rotate_hue(rgb: np.ndarray, degrees: Sequence[float]) -> np.ndarray:
  """(B, H, W, 3) sRGB, each image's CIE Lab hue rotated by its angle (`color.rotate_hue`)."""
  return np.asarray(_rotate_hue(jnp.asarray(rgb, jnp.float32),
                                jnp.asarray(degrees, jnp.float32)))


def shuffle_pixels(images: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
  """Each image's pixels in a random order (seeded per image): same colours, no structure."""
  out = np.empty_like(images)
  for i, (image, seed) in enumerate(zip(images, seeds)):
    flat = image.reshape(-1, image.shape[-1])
    out[i] = flat[np.random.default_rng(seed).permutation(len(flat))].reshape(image.shape)
  return out


def tint(input_l: np.ndarray, reference_rgb: np.ndarray) -> np.ndarray:
  """Baseline: the input's luminance with the reference's mean chroma at every pixel."""
  ab = np.broadcast_to(mean_chroma(reference_rgb)[:, None, None, :],
                       input_l.shape[:3] + (2,))
  return lab_to_rgb(input_l, ab)


WELSH_SAMPLES = 200  # jittered reference samples (Welsh et al. 2002, sec. 2: "about 200")
WELSH_WINDOW = 5  # neighbourhood of the luminance standard deviation (their 5x5)


def _local_std(l: np.ndarray, window: int) -> np.ndarray:
  """Standard deviation of a (H, W) image over window x window neighbourhoods (edges
  reflected)."""
  mean = ndimage.uniform_filter(l, window, mode='reflect')
  mean_sq = ndimage.uniform_filter(l * l, window, mode='reflect')
  return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


def welsh_transfer(input_l: np.ndarray, reference_rgb: np.ndarray,
                   samples: int = WELSH_SAMPLES, window: int = WELSH_WINDOW,
                   seed: int = 0) -> np.ndarray:
  """Baseline: Welsh, Ashikhmin and Mueller (2002), global matching, in CIE Lab.

  The reference's luminance is remapped to the input's mean and standard deviation; about
  `samples` reference pixels are drawn on a jittered grid; every input pixel takes the chroma
  of the sample whose (luminance, `window`-neighbourhood standard deviation) is nearest, the
  two weighted equally (squared distance); the input's luminance is kept. Welsh et al. work
  in l-alpha-beta; CIE Lab is this project's colour space (docs/MODEL.md).

  Args:
    input_l: (B, H, W, 1) normalised luminance.
    reference_rgb: (B, Hr, Wr, 3) sRGB in [0, 1].
  Returns:
    (B, H, W, 3) sRGB.
  """
  ref_l, ref_ab = (np.asarray(x) for x in _rgb_to_lab(jnp.asarray(reference_rgb, jnp.float32)))
  rng = np.random.default_rng(seed)
  out_ab = np.empty(input_l.shape[:3] + (2,), np.float32)
  for i in range(len(input_l)):
    l, rl, rab = input_l[i, ..., 0].astype(np.float64), ref_l[i, ..., 0], ref_ab[i]
    rl = (rl - rl.mean()) * (l.std() / max(rl.std(), 1e-6)) + l.mean()
    h, w = rl.shape
    cells = max(1, int(round(math.sqrt(samples))))
    ys = ((np.arange(cells)[:, None] + rng.random((cells, cells))) * h / cells).astype(int)
    xs = ((np.arange(cells)[None, :] + rng.random((cells, cells))) * w / cells).astype(int)
    ys, xs = np.minimum(ys, h - 1).ravel(), np.minimum(xs, w - 1).ravel()
    sample_features = np.stack([rl[ys, xs], _local_std(rl, window)[ys, xs]], -1)
    features = np.stack([l, _local_std(l, window)], -1).reshape(-1, 2)
    nearest = np.empty(len(features), np.int64)
    for start in range(0, len(features), 16384):  # bounded memory on whole photos
      f = features[start:start + 16384]
      distance = (0.5 * np.square(f[:, None, 0] - sample_features[None, :, 0]) +
                  0.5 * np.square(f[:, None, 1] - sample_features[None, :, 1]))
      nearest[start:start + len(f)] = np.argmin(distance, axis=1)
    out_ab[i] = rab[ys, xs][nearest].reshape(l.shape + (2,))
  return lab_to_rgb(input_l, out_ab)


def grey(l: np.ndarray) -> np.ndarray:
  """Normalised luminance (B, H, W, 1) -> the sRGB grey image of that lightness."""
  return lab_to_rgb(l, np.zeros(l.shape[:3] + (2,), np.float32))


def luminance8(l: np.ndarray) -> np.ndarray:
  """Normalised L in [0, 1] -> uint8 (B, H, W, 1): the L channel as an 8-bit image."""
  return metrics.quantize(np.clip(l, 0.0, 1.0))


class Scorer:
  """Scores batches (docs/CONTRACTS.md batch format) of a `Predict` and the baselines.

  Attributes:
    lpips: an `metrics.LPIPSMetric`, or None (no LPIPS column).
    rows: which of `ROWS` to score.
    control_angles: reference hue rotations of the reference control; () to skip it.
    restoration: whether to score the restoration checks (L channel; clean-input pass).
    convention: SSIM convention (`metrics.CONVENTIONS`).
    uses_reference: False for a method that takes no reference: the shuffled-reference row and
      the reference control, which ask whether it follows one, are not scored.
  """

  def __init__(self, lpips: Optional[metrics.LPIPSMetric] = None,
               rows: Sequence[str] = ROWS, control_angles: Sequence[float] = (),
               restoration: bool = False, convention: str = 'authors',
               uses_reference: bool = True):
    unknown = set(rows) - set(ROWS)
    if unknown:
      raise ValueError(f'unknown score rows {sorted(unknown)}; known: {ROWS}')
    self.lpips = lpips
    self.rows = tuple(r for r in ROWS if r in rows and (uses_reference or r != SHUFFLED))
    self.control_angles = tuple(float(a) for a in control_angles) if uses_reference else ()
    self.restoration = restoration
    metrics.check_convention(convention)
    self.convention = convention

  def _image_scores(self, target8: np.ndarray, rgb: np.ndarray) -> list[dict]:
    out8 = metrics.quantize(rgb)
    psnr = metrics.psnr(target8, out8)
    ssim = metrics.ssim_by_convention(target8, out8, self.convention)
    lp = self.lpips(target8, out8) if self.lpips is not None else [None] * len(out8)
    # MAE on [0, 1] sRGB (the CMS4CV report's table; no other paper reports it).
    mae = np.mean(np.abs(target8.astype(np.float64) - out8), axis=(1, 2, 3)) / 255.0
    return [{'psnr': float(psnr[i]), 'ssim': float(ssim[i]),
             'lpips': None if lp[i] is None else float(lp[i]), 'mae': float(mae[i])}
            for i in range(len(out8))]

  def score_batch(self, predict: Predict, batch: dict, first_index: int = 0,
                  outputs: Optional[dict] = None) -> tuple[list[dict], dict]:
    """Scores the rows of `batch` whose mask is 1 (all rows when it has no mask).

    Args:
      predict: the model.
      batch: input_l, target_lab, reference_rgb, id (and mask).
      first_index: index of the batch's first row in the split (seeds the shuffles).
      outputs: predict's outputs for the batch, when the caller has them already.

    Returns:
      (one record per valid row: {'id', 'index', row name: {'psnr', 'ssim', 'lpips'}, ...,
      'hue_error' {angle: degrees}, restoration fields}, the model's outputs).
    """
    l, reference = np.asarray(batch['input_l']), np.asarray(batch['reference_rgb'])
    target_lab = np.asarray(batch['target_lab'])
    valid = np.asarray(batch.get('mask', np.ones(len(l))), bool)
    target8 = metrics.quantize(lab_to_rgb(target_lab[..., :1], target_lab[..., 1:]))
    outputs = predict(l, reference) if outputs is None else outputs
    indices = first_index + np.arange(len(l))
    images = {MODEL: outputs['rgb']}
    if SHUFFLED in self.rows:
      images[SHUFFLED] = predict(l, shuffle_pixels(reference, indices))['rgb']
    if TINT in self.rows:
      images[TINT] = tint(l, reference)
    if WELSH in self.rows:
      images[WELSH] = welsh_transfer(l, reference)
    if ZERO_CHROMA in self.rows:
      images[ZERO_CHROMA] = grey(l)
    if RESTORED_ZERO_CHROMA in self.rows:
      images[RESTORED_ZERO_CHROMA] = grey(outputs['restored_l'])
    scores = {row: self._image_scores(target8, images[row]) for row in self.rows}

    hue_errors = {}
    for angle in self.control_angles:
      turned = rotate_hue(reference, [angle] * len(reference))
      out = predict(l, turned)['rgb']
      hue_errors[angle] = angle_difference(hue_angle(mean_chroma(out)),
                                           hue_angle(mean_chroma(turned)))

    restoration = {}
    if self.restoration:
      target_l = target_lab[..., :1]
      gt_l8 = luminance8(target_l)
      for name, lum in (('degraded', l), ('restored', outputs['restored_l'])):
        lum8 = luminance8(lum)
        restoration[f'{name}_l_psnr'] = metrics.psnr(gt_l8, lum8)
        restoration[f'{name}_l_ssim'] = metrics.ssim_by_convention(gt_l8, lum8, self.convention)
      clean = predict(target_l, reference)
      restoration['clean_restored_l_psnr'] = metrics.psnr(gt_l8, luminance8(clean['restored_l']))
      restoration['clean_output_psnr'] = metrics.psnr(target8, metrics.quantize(clean['rgb']))
      restoration['clean_input_l_output_psnr'] = metrics.psnr(
          target8, metrics.quantize(lab_to_rgb(target_l, clean['ab'])))

    ids = batch.get('id', [str(i) for i in indices])
    records = []
    for i in np.nonzero(valid)[0]:
      name = ids[i].decode() if isinstance(ids[i], bytes) else str(ids[i])
      record = {'id': name, 'index': int(indices[i])}
      record.update({row: scores[row][i] for row in self.rows})
      if hue_errors:
        record['hue_error'] = {a: float(e[i]) for a, e in hue_errors.items()}
      record.update({k: float(v[i]) for k, v in restoration.items()})
      records.append(record)
    return records, outputs

  def score(self, predict: Predict, batches: Iterable[dict]) -> list[dict]:
    """`score_batch` over batches; the records of every valid row, in order."""
    records, index = [], 0
    for batch in batches:
      batch_records, _ = self.score_batch(predict, batch, first_index=index)
      records += batch_records
      index += len(batch['input_l'])
    return records


def summarize(records: Sequence[dict], rows: Sequence[str] = ROWS) -> dict:
  """Means over images of every row, the share of images where the model beats the best
  baseline (by PSNR), the reference control and the restoration checks."""
  if not records:
    raise ValueError('no images to summarise')
  rows = [r for r in rows if r in records[0]]
  summary = {'images': len(records), 'rows': {}}
  for row in rows:
    summary['rows'][row] = {
        m: (metrics.mean(r[row][m] for r in records)
            if all(r[row][m] is not None for r in records) else None)
        for m in ('psnr', 'ssim', 'lpips', 'mae')}
  baselines = [r for r in rows if r in BASELINES]
  if MODEL in rows and baselines:
    best = max(baselines, key=lambda r: summary['rows'][r]['psnr'])
    summary['best_baseline'] = best
    summary['beats_best_baseline'] = float(np.mean(
        [r[MODEL]['psnr'] > r[best]['psnr'] for r in records]))
  if 'hue_error' in records[0]:
    errors = np.array([[r['hue_error'][a] for a in sorted(r['hue_error'])] for r in records])
    summary['reference_control'] = {
        'angles': sorted(records[0]['hue_error']),
        'mean_error': float(errors.mean()), 'max_error': float(errors.max()),
        'within_tolerance': float(np.mean(errors <= HUE_TOLERANCE)),
        'tolerance': HUE_TOLERANCE}
  if 'degraded_l_psnr' in records[0]:
    keys = [k for k in records[0] if k.endswith(('_psnr', '_ssim')) and k not in rows]
    summary['restoration'] = {k: metrics.mean(r[k] for r in records) for k in keys}
  return summary


def format_number(value: Optional[float], digits: int) -> str:
  """`value` with `digits` decimals; '' for None or NaN."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ''
  return f'{value:.{digits}f}'


def checks_markdown(summary: dict) -> list[str]:
  """Paragraphs: the share of images where the model beats the best baseline, the reference
  control and the restoration checks (those the summary has)."""
  paragraphs = []
  if 'best_baseline' in summary:
    paragraphs.append(
        f'The model beats the best baseline ({LABELS[summary["best_baseline"]]}, by PSNR) on '
        f'{100 * summary["beats_best_baseline"]:.0f} % of the {summary["images"]} images.')
  control = summary.get('reference_control')
  if control:
    paragraphs.append(
        'Reference control: the reference hue-rotated by '
        f'{", ".join(f"{a:g}" for a in control["angles"])} degrees (the ground truth not); the '
        'hue angle of the output\'s mean chroma against the reference\'s: mean error '
        f'{control["mean_error"]:.1f}°, max {control["max_error"]:.1f}°, '
        f'{100 * control["within_tolerance"]:.0f} % within {control["tolerance"]:g}°.')
  r, num = summary.get('restoration'), format_number
  if r:
    paragraphs.append(
        'Restoration (L channel, 8-bit, against the clean luminance): degraded input '
        f'{num(r["degraded_l_psnr"], 2)} dB / SSIM {num(r["degraded_l_ssim"], 3)}, restored '
        f'{num(r["restored_l_psnr"], 2)} dB / SSIM {num(r["restored_l_ssim"], 3)}. With the '
        f'clean luminance as input: restored L {num(r["clean_restored_l_psnr"], 2)} dB; output '
        f'{num(r["clean_output_psnr"], 2)} dB against {num(r["clean_input_l_output_psnr"], 2)} '
        'dB for the same output with the input\'s own L.')
  return paragraphs


def summary_markdown(summary: dict) -> str:
  """The rows as a Markdown table, then `checks_markdown`."""
  has_lpips = any(s['lpips'] is not None for s in summary['rows'].values())
  lines = ['| method | PSNR ↑ | SSIM ↑ | LPIPS ↓ |', '| --- | --- | --- | --- |']
  num = format_number
  for row, s in summary['rows'].items():
    lines.append(f'| {LABELS[row]} | {num(s["psnr"], 2)} | {num(s["ssim"], 3)} | '
                 f'{num(s["lpips"], 3) if has_lpips else "n/a"} |')
  for paragraph in checks_markdown(summary):
    lines += ['', paragraph]
  return '\n'.join(lines) + '\n'
