"""Evaluate a trained Pik-Fix on a test split: `python -m pikfix_jax.evaluate`.

  python -m pikfix_jax.evaluate --config=configs/div2k.py --workdir=runs/div2k \
      [--use_best] [--reference_rank=1..10 | --reference_rank=1,2,...,10] [--output_dir=DIR]

Runs `input_pipeline.eval_dataset(config)` (the dataset, crops, degradations and references
of --config; the model architecture and weights of --workdir) and writes into --output_dir
(default WORKDIR/eval):

  metrics.csv     one row: dataset, images, mean PSNR / SSIM / LPIPS, checkpoint, conventions
  per_image.csv   one row per test image
  table.md        the paper's Table 1 layout, with the paper's numbers beside ours
  grid.png        input | reference | output | ground truth for the first --grid_rows images

--reference_rank=k replaces every image's reference by its k-th most similar *training* image
(paper Fig. 5; needs config.data.retrieval_index built over the training and test images) and
writes per_image_rank{k}.csv, grid_rank{k}.png and one row per rank in
reference_sensitivity.csv / .md (rows of other ranks already there are kept).

Metrics follow `pikfix_jax.metrics` (8-bit sRGB; SSIM and LPIPS by config.metrics.convention:
'authors', as their released code (LPIPS AlexNet v0.1), or 'skimage' (LPIPS VGG v0.1); LPIPS
only with that network's converted weights in config.backbones.lpips, otherwise reported as
unavailable, never computed from random features). Face configs with config.backbones.arcface
(a converted arcface_resnet18.pth) add the identity distance: the mean 1 - cos between the
ArcFace embeddings of the 8-bit output and ground truth, a line under table.md's table.
"""

import csv
import datetime
import functools
import json
import os
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from pikfix_jax import artifacts
from pikfix_jax import cli
from pikfix_jax import image_io
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import metrics
from pikfix_jax import scoring
from pikfix_jax import wan_release
from pikfix_jax import weights
from pikfix_jax.data import input_pipeline
from pikfix_jax.data import references
from pikfix_jax.data import sources
from pikfix_jax.models import arcface
from pikfix_jax.models import layers
from pikfix_jax.models import pikfix
from pikfix_jax.ops import color

# Fig. 5 (DIV2K): only the end points are given in the text.
PAPER_SENSITIVITY = {1: (23.95, 0.925, 0.12), 10: (22.25, 0.899, 0.15)}
_LPIPS_TEXT = {
    'authors': "LPIPS AlexNet v0.1 on x/127.5-1, spatial mean (the authors' utils/loss.py, "
               "lipis_eval(net_type='alex'))",
    'skimage': 'LPIPS VGG v0.1 on x/127.5-1, spatial mean',
}
_SSIM_TEXT = {
    'authors': "SSIM per image as the authors' released code (utils/ssim.py): images / 255, "
               '11x11 Gaussian window sigma 1.5, zero padding, C1 0.01^2, C2 0.03^2, mean over '
               'positions and channels',
    'skimage': 'SSIM per image as skimage structural_similarity(channel_axis=-1, '
               'data_range=255): 7x7 uniform window, sample covariance, K1 0.01, K2 0.03, mean '
               'over channels',
}


def conventions_text(convention: str) -> str:
  """The metric conventions of a table, in words (`metrics.CONVENTIONS`)."""
  metrics.check_convention(convention)
  return (f'{convention}: sRGB, 8-bit [0, 255] quantised output and ground truth; PSNR per image '
          '(skimage peak_signal_noise_ratio, data_range 255), averaged over images; '
          f'{_SSIM_TEXT[convention]}; {_LPIPS_TEXT[convention]}')


SUMMARY_FIELDS = ('dataset', 'split', 'degraded', 'method', 'images', 'psnr', 'ssim', 'lpips',
                  'mae', 'reference', 'eval_image_size', 'checkpoint', 'step', 'date', 'conventions',
                  'lpips_note')


def condition_label(config: ml_collections.ConfigDict) -> str:
  degraded = 'w/ degradation' if config.data.degrade else 'w/o degradation'
  return f'{config.dataset} ({degraded})'


def check_model_config(config: ml_collections.ConfigDict,
                       trained: ml_collections.ConfigDict) -> None:
  """Warns when --config's model section differs from the checkpoint's (which is used)."""
  a = flax.traverse_util.flatten_dict(_plain(config.model.to_dict()), sep='.')
  b = flax.traverse_util.flatten_dict(_plain(trained.model.to_dict()), sep='.')
  diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  if diff:
    logging.warning('--config model differs from the checkpoint\'s in %s; using the '
                    'checkpoint\'s (its config.json).', ', '.join(diff[:8]))


def check_selection(config: ml_collections.ConfigDict, trained: ml_collections.ConfigDict,
                    workdir: str, export: str = '') -> None:
  """Refuses to score a best/ checkpoint on the split it was chosen on.

  Training keeps best/ by validation PSNR on `sources.validation_split`: images held out of
  the training split when data.selection_size > 0 (never an evaluation split: allowed), else
  the config's evaluation split (`sources.EVAL_SPLIT`), which for the paper's datasets is the
  test split: a checkpoint chosen there and scored there reports an optimistic number.
  Scoring it on another dataset (a VOC model on RealOld) is fine. `export`: the path of an
  export made with `export --use_best` from `workdir` (the same best/, the same refusal)."""
  if trained.data.get('selection_size', 0):
    return
  if _evaluation_split(trained) == _evaluation_split(config):
    what, remedy = '--use_best: ', 'drop --use_best'
    if export:
      what, remedy = (f'--checkpoint={export} was exported with --use_best: ',
                      'export without --use_best')
    raise ValueError(
        f'{what}{os.path.join(workdir, artifacts.BEST_DIR)} was chosen by PSNR on '
        f'{trained.dataset}/{sources.EVAL_SPLIT.get(trained.dataset)}, the split this '
        f'evaluation scores; {remedy} to score the final checkpoint, or retrain with '
        '--config.data.selection_size=N to choose best/ on held-out training images')


def check_export_selection(config: ml_collections.ConfigDict,
                           trained: ml_collections.ConfigDict, export: str) -> None:
  """`check_selection` for an exported model: its export.json records whether `export
  --use_best` wrote it and from which workdir (its config.json is that workdir's)."""
  path = os.path.join(export, artifacts.EXPORT_META)
  if not os.path.exists(path):  # not an export, or one from before export.json
    return
  with open(path) as f:
    record = json.load(f)
  if record.get('use_best'):
    check_selection(config, trained, record.get('workdir') or export, export=export)


def _evaluation_split(config: ml_collections.ConfigDict) -> tuple:
  """What decides a config's evaluation split: the dataset, and for datasets split by a seed,
  the fields that draw the split."""
  d = config.data
  fields = {'voc': ('split_seed', 'voc_num_train', 'voc_num_test'),
            'image_folder': ('image_folder', 'val_fraction', 'split_seed')}
  return (config.dataset,) + tuple(d.get(k) for k in fields.get(config.dataset, ()))


def apply_inference_options(config: ml_collections.ConfigDict,
                            trained: ml_collections.ConfigDict) -> list[str]:
  """Copies --config's values of the method's `inference_options` (model fields no variable
  depends on: a sampler's steps, eta, seed) into the checkpoint's config, so one trained model
  is scored under several; returns the fields that changed."""
  changed = [k for k in methods.method_class(trained).inference_options
             if k in config.model and config.model[k] != trained.model.get(k)]
  for k in changed:
    trained.model[k] = config.model[k]
  return changed


def sampling_seeds(text: Optional[str], trained: ml_collections.ConfigDict
                   ) -> list[Optional[int]]:
  """The sampling seeds to score: --sampling_seeds (comma-separated) or, for a method that
  samples (its `inference_options` hold 'sampling_seed'), three: the seed of `trained` (the
  checkpoint's config after `apply_inference_options`) and the two after it, so a table gives
  the mean and spread of sampling; [None] (one run) otherwise."""
  samples = 'sampling_seed' in methods.method_class(trained).inference_options
  if text:
    if not samples:
      raise ValueError(f'--sampling_seeds: method {methods.name_of(trained)!r} does not sample '
                       '(no sampling_seed); leave the flag out')
    try:
      seeds = [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
      raise ValueError(f'--sampling_seeds={text}: give integers, e.g. 0,1,2') from None
    if not seeds or len(set(seeds)) != len(seeds):
      raise ValueError(f'--sampling_seeds={text}: give distinct integers, e.g. 0,1,2')
    return seeds
  if not samples:
    return [None]
  first = int(trained.model.sampling_seed)
  return [first, first + 1, first + 2]


def seeds_markdown(label: str, seeds: Sequence[int], summaries: Sequence[dict]) -> str:
  """The model's row for each sampling seed, their mean and sample standard deviation, and the
  baselines (which do not sample: the same under every seed) once."""
  num = scoring.format_number
  has_lpips = all(s['lpips'] is not None for s in summaries)
  lines = [f'# {label}: {len(seeds)} sampling seeds', '',
           '| Run | PSNR ↑ | SSIM ↑ | LPIPS ↓ |', '| --- | --- | --- | --- |']
  for seed, s in zip(seeds, summaries):
    lpips = num(s['lpips'], 3) if has_lpips else 'n/a'
    lines.append(f'| seed {seed} | {num(s["psnr"], 2)} | {num(s["ssim"], 3)} | {lpips} |')

  def spread(key: str, digits: int) -> str:
    values = np.array([s[key] for s in summaries], np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f'{values.mean():.{digits}f} ± {std:.{digits}f}'

  lines.append(f'| mean ± std over seeds | {spread("psnr", 2)} | {spread("ssim", 3)} | '
               f'{spread("lpips", 3) if has_lpips else "n/a"} |')
  for row, s in summaries[0]['scores']['rows'].items():
    if row != scoring.MODEL:
      lpips = num(s['lpips'], 3) if has_lpips else 'n/a'
      lines.append(f'| {scoring.LABELS[row]} | {num(s["psnr"], 2)} | {num(s["ssim"], 3)} | '
                   f'{lpips} |')
  lines += ['', f'{summaries[0]["images"]} images of the `{summaries[0]["split"]}` split; each '
            'seed\'s own table, grid and per-image scores are in seed_<S>/; std: sample '
            'standard deviation (ddof 1) of the per-seed means.', '',
            f'Conventions: {summaries[0]["conventions"]}.']
  return '\n'.join(lines) + '\n'


def _plain(tree):
  if isinstance(tree, dict):
    return {k: _plain(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return tuple(_plain(v) for v in tree)
  return tree


def rank_references(config: ml_collections.ConfigDict, rank: int
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """The `rank`-th most similar training image of every evaluation image (paper Fig. 5).

  Returns (index into the training pool per evaluation example, -1 when the index has fewer
  neighbours; uint8 pool (N_train, R, R, 3); training ids).
  """
  d = config.data
  if not d.retrieval_index:
    raise ValueError('--reference_rank needs config.data.retrieval_index: an index built over '
                     'the training and evaluation images (docs/DATA.md, docs/REPRODUCE.md).')
  if rank < 1:
    raise ValueError(f'--reference_rank={rank}: ranks start at 1')
  eval_ids = input_pipeline.split_ids(sources.get_split(config, 'validation'))
  train_ids = input_pipeline.split_ids(sources.get_split(config, 'train'))
  neighbors = references.load_neighbors(d.retrieval_index, eval_ids, train_ids, rank,
                                        exclude_self=False)
  chosen = neighbors[:, rank - 1]
  if (chosen < 0).any():
    logging.warning('Retrieval index %s gives no rank-%d training image for %d of %d '
                    'evaluation images; they keep the default reference.', d.retrieval_index,
                    rank, int((chosen < 0).sum()), len(chosen))
  size = d.eval_image_size or d.image_size
  pool = np.asarray(input_pipeline.reference_pool(config, 'train', size).numpy())
  return chosen, pool, train_ids


def _grey(l: np.ndarray) -> np.ndarray:
  return np.repeat(np.clip(l, 0.0, 1.0), 3, axis=-1)


def image_grid(rows: Sequence[Sequence[np.ndarray]], height: int = 256) -> np.ndarray:
  """Rows of panels (float RGB) resized to `height`, padded white to the widest row."""
  out = []
  for panels in rows:
    resized = [image_io.resize_float(np.clip(p, 0, 1), height,
                                     max(1, round(p.shape[1] * height / p.shape[0])))
               for p in panels]
    gap = np.ones((height, 4, 3), np.float32)
    row = resized[0]
    for p in resized[1:]:
      row = np.concatenate([row, gap, p], axis=1)
    out.append(row)
  width = max(r.shape[1] for r in out)
  out = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in out]
  return np.concatenate(out, axis=0)


def _write_csv(path: str, fields: Sequence[str], rows: Sequence[dict]) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(fields))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row.get(k, '') for k in fields})


def _read_csv(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def table_markdown(config: ml_collections.ConfigDict, summary: dict, lpips_note: str,
                   method_label: str = '') -> str:
  """Our numbers in the layout of the paper's Table 1, beside the paper's, with the controls
  and baselines of pikfix_jax.scoring on the same images. `method_label`: the row's name
  (default: the method's label of `config`)."""
  method = methods.method_class(config)
  method_name = method_label or method.label(config)
  source, paper = method.paper_rows.get((config.dataset, bool(config.data.degrade)), ('', None))
  label = condition_label(config)
  rows = summary['scores']['rows']
  has_lpips = summary['lpips'] is not None
  num = scoring.format_number
  lines = [f'# Evaluation: {label}', '',
           f'| Method | {label}: PSNR ↑ | SSIM ↑ | LPIPS ↓ |', '| --- | --- | --- | --- |']
  if paper:
    lines.append(f'| {method_name} (paper, {source}) | {paper[0]:.2f} | '
                 f'{paper[1]:.3f} | {paper[2]:.3f} |')
  for row, s in rows.items():
    name = (f'{method_name}, pikfix_jax (this run)' if row == scoring.MODEL
            else scoring.LABELS[row])
    lpips = num(s['lpips'], 3) if has_lpips else 'n/a ¹'
    lines.append(f'| {name} | {num(s["psnr"], 2)} | {num(s["ssim"], 3)} | {lpips} |')
  if summary.get('identity_distance') is not None:
    distance = summary['identity_distance']
    lines += ['', f'Identity distance (mean 1 − cosine of the ArcFace embeddings of an image '
              f'and the ground truth; config.backbones.arcface): {method_name} '
              f'{distance[scoring.MODEL]:.4f}; {scoring.LABELS[scoring.ZERO_CHROMA]} '
              f'{distance[scoring.ZERO_CHROMA]:.4f}.']
  for paragraph in scoring.checks_markdown(summary['scores']):
    lines += ['', paragraph]
  lines += ['', f'{summary["images"]} images of the `{summary["split"]}` split; reference: '
            f'{summary["reference"]}; checkpoint {summary["checkpoint"]} (step '
            f'{summary["step"]}); eval_image_size {summary["eval_image_size"]}.', '',
            f'Conventions: {summary["conventions"]}.']
  if not has_lpips:
    lines += ['', f'¹ LPIPS not computed: {lpips_note}']
  if not paper:
    lines += ['', f'The paper reports no {method_name} numbers for {label}.']
  return '\n'.join(lines) + '\n'


def sensitivity_markdown(rows: Sequence[dict]) -> str:
  lines = ['# Sensitivity to the reference (paper Fig. 5): k-th most similar training image',
           '', '| rank | PSNR ↑ | SSIM ↑ | LPIPS ↓ | paper PSNR | paper SSIM | paper LPIPS '
           '| images |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for row in sorted(rows, key=lambda r: int(r['rank'])):
    paper = PAPER_SENSITIVITY.get(int(row['rank']))
    p = [f'{paper[0]:.2f}', f'{paper[1]:.3f}', f'{paper[2]:.2f}'] if paper else ['', '', '']
    num = scoring.format_number
    lines.append(f'| {row["rank"]} | {num(_float(row["psnr"]), 2)} | '
                 f'{num(_float(row["ssim"]), 3)} | {num(_float(row["lpips"]), 3) or "n/a"} | '
                 f'{" | ".join(p)} | {row["images"]} |')
  lines += ['', 'Paper: DIV2K, rank 1 -> rank 10 (only the end points are given in the text).',
            'Conventions: ' + '; '.join(sorted({r.get('conventions') or 'not recorded'
                                                for r in rows})) + '.']
  return '\n'.join(lines) + '\n'


def _float(value) -> Optional[float]:
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


@functools.lru_cache(maxsize=4)
def _forward(model: nn.Module):
  """Jitted (variables, L, reference) -> {'rgb', 'restored_l', 'ab'}; inputs padded to
  multiples of 32 and cropped back. One per model, so evaluating several reference ranks
  compiles once."""
  def forward(v, l, r):
    l, hw = layers.pad_to_multiple(l, pikfix.MULTIPLE)
    r, _ = layers.pad_to_multiple(r, pikfix.MULTIPLE)
    out = model.apply(v, l, r)
    return {k: layers.crop_to(out[k], hw) for k in ('rgb', 'restored_l', 'ab') if k in out}
  return jax.jit(forward)


@jax.jit
def _identity_distance(variables: dict, rgb: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Per-image ArcFace identity distance of 8-bit sRGB outputs and targets (uint8 arrays)."""
  to_face = lambda x: x.astype(jnp.float32) / 127.5 - 1.0  # the release's [-1, 1]
  return arcface.identity_distance(variables, to_face(rgb), to_face(target))


@jax.jit
def _lab_to_rgb(lab: jnp.ndarray) -> jnp.ndarray:
  return color.lab_normalized_to_rgb(lab[..., :1], lab[..., 1:])


def evaluate(config: ml_collections.ConfigDict, model: Optional[nn.Module],
             variables: Optional[dict], output_dir: str, *,
             reference_rank: Optional[int] = None,
             batch_size: Optional[int] = None, grid_rows: int = 8,
             max_batches: Optional[int] = None, source: str = '',
             step: Optional[int] = None, reference_control: bool = True,
             trained: Optional[ml_collections.ConfigDict] = None,
             restorer=None, method_label: str = '') -> dict:
  """Scores `model`, its controls and the baselines (pikfix_jax.scoring) on config's evaluation
  split and writes the files (module docstring).

  With config.data.eval_image_size = 0 every image is scored whole through the inference
  engine of the method that `trained` (the checkpoint's config; default `config`) names,
  `make_restorer`, as `restore` runs it: Pik-Fix's exact tiling, the baselines' whole-image
  restorer.

  `restorer` (with model and variables None): a restorer that runs each image (crop or whole)
  on its own, e.g. the released Wan et al. model (`wan_release.PhotoRestorer`); its row is
  labelled `method_label` (default: config.method's label).

  Returns the summary dict: the model's means over images ('lpips' None when unavailable) and
  'scores', pikfix_jax.scoring.summarize of every row.
  """
  os.makedirs(output_dir, exist_ok=True)
  lpips_path = config.backbones.lpips
  lpips_metric, lpips_note = metrics.maybe_lpips(lpips_path, config.metrics.convention)
  if lpips_metric is None:
    logging.warning('LPIPS not computed: %s', lpips_note)

  arcface_path = config.backbones.get('arcface', '')
  arcface_variables = (weights.maybe_load_backbone(
      arcface_path, 'arcface', weights.variable_shapes('arcface')) if arcface_path else None)
  identity_distances = {scoring.MODEL: [], scoring.ZERO_CHROMA: []}

  full_size = config.data.eval_image_size == 0
  batch_size = 1 if full_size else (batch_size or config.train.eval_batch_size)
  chosen = pool = train_ids = None
  if reference_rank:
    chosen, pool, train_ids = rank_references(config, reference_rank)
  per_image = len(input_pipeline.eval_hue_rotations(config))  # examples per evaluation image

  if restorer is None:
    variables = jax.device_put(variables)
    forward = _forward(model)
    # The method's own engine (not inference.Restorer, which only builds a Pik-Fix): the
    # model section of the checkpoint's config, which built `model`.
    restorer = methods.get(trained or config).make_restorer(variables) if full_size else None

  def predict(l: np.ndarray, reference: np.ndarray) -> dict:
    if restorer is not None:  # one image at a time, through the restorer
      outs = [restorer(l[i], reference[i], outputs=True) for i in range(len(l))]
      return {k: np.stack([o[k] for o in outs]) for k in outs[0]}
    return jax.tree_util.tree_map(np.asarray,
                                  forward(variables, jnp.asarray(l), jnp.asarray(reference)))

  scorer = scoring.Scorer(
      lpips_metric, control_angles=scoring.CONTROL_ANGLES if reference_control else (),
      restoration=bool(config.data.degrade), convention=config.metrics.convention,
      uses_reference=methods.method_class(config).uses_reference)
  records, references, grid = [], [], []
  index = 0
  batches = input_pipeline.eval_dataset(config, batch_size=batch_size)
  if max_batches:
    batches = batches.take(max_batches)
  for batch in batches.as_numpy_iterator():
    batch['reference_rgb'] = reference = np.array(batch['reference_rgb'])
    names = ['default'] * len(reference)
    for i in range(len(reference)):
      image = (index + i) // per_image
      if chosen is not None and batch['mask'][i] and image < len(chosen):
        j = chosen[image]
        if j >= 0:
          reference[i] = pool[j].astype(np.float32) / 255.0
          names[i] = f'train:{train_ids[j]}'
    batch_records, outputs = scorer.score_batch(predict, batch, first_index=index)
    records += batch_records
    references += [names[i] for i in range(len(reference)) if batch['mask'][i]]
    target = np.asarray(_lab_to_rgb(jnp.asarray(batch['target_lab'])))
    if arcface_variables is not None:  # the model's output, and the input as its baseline
      for row, rgb in ((scoring.MODEL, outputs['rgb']),
                       (scoring.ZERO_CHROMA, scoring.grey(batch['input_l']))):
        distance = np.asarray(_identity_distance(arcface_variables, metrics.quantize(rgb),
                                                 metrics.quantize(target)))
        identity_distances[row] += [float(distance[i]) for i in range(len(reference))
                                    if batch['mask'][i]]
    for i in range(len(reference)):
      if batch['mask'][i] and len(grid) < grid_rows:
        grid.append([_grey(batch['input_l'][i]), reference[i],
                     metrics.quantize(outputs['rgb'][i]) / 255.0,
                     scoring.tint(batch['input_l'][i:i + 1], reference[i:i + 1])[0],
                     metrics.quantize(target[i]) / 255.0])
    index += len(reference)
  if not records:
    raise ValueError(f'{config.dataset}: the evaluation split is empty')

  scores = scoring.summarize(records)
  model_scores = scores['rows'][scoring.MODEL]
  summary = {
      'dataset': config.dataset, 'split': sources.EVAL_SPLIT.get(config.dataset, 'validation'),
      'degraded': bool(config.data.degrade), 'method': scoring.MODEL,
      'images': len(records), 'psnr': model_scores['psnr'], 'ssim': model_scores['ssim'],
      'lpips': model_scores['lpips'], 'mae': model_scores['mae'],
      'reference': (f'rank {reference_rank} training image' if reference_rank
                    else f'data.eval_reference={config.data.eval_reference}'),
      'eval_image_size': config.data.eval_image_size, 'checkpoint': source, 'step': step,
      'date': datetime.date.today().isoformat(),
      'conventions': conventions_text(config.metrics.convention),
      'lpips_note': lpips_note, 'scores': scores,
      'identity_distance': ({row: float(np.mean(d)) for row, d in identity_distances.items()}
                            if identity_distances[scoring.MODEL] else None),
  }
  per_image_fields = ('index', 'id', 'method', 'psnr', 'ssim', 'lpips', 'mae', 'reference')
  printable = lambda r: {k: ('' if v is None else (f'{v:.6f}' if isinstance(v, float) else v))
                         for k, v in r.items()}
  per_image_rows = [printable({'index': r['index'], 'id': r['id'], 'method': row,
                               'reference': name, **r[row]})
                    for r, name in zip(records, references) for row in scorer.rows]
  suffix = f'_rank{reference_rank}' if reference_rank else ''
  _write_csv(os.path.join(output_dir, f'per_image{suffix}.csv'), per_image_fields,
             per_image_rows)
  image_io.write_image(os.path.join(output_dir, f'grid{suffix}.png'), image_grid(grid))
  if reference_rank:
    path = os.path.join(output_dir, 'reference_sensitivity.csv')
    kept = [r for r in _read_csv(path) if int(r['rank']) != reference_rank]
    kept.append(printable({'rank': reference_rank, 'psnr': summary['psnr'],
                           'ssim': summary['ssim'], 'lpips': summary['lpips'],
                           'images': len(records), 'checkpoint': source, 'step': step,
                           'conventions': summary['conventions']}))
    fields = ('rank', 'psnr', 'ssim', 'lpips', 'images', 'checkpoint', 'step', 'conventions')
    kept.sort(key=lambda r: int(r['rank']))
    _write_csv(path, fields, kept)
    with open(os.path.join(output_dir, 'reference_sensitivity.md'), 'w') as f:
      f.write(sensitivity_markdown(kept))
  else:
    method_rows = [printable(dict(summary, method=row, **scores['rows'][row]))
                   for row in scores['rows']]
    _write_csv(os.path.join(output_dir, 'metrics.csv'), SUMMARY_FIELDS, method_rows)
    with open(os.path.join(output_dir, 'table.md'), 'w') as f:
      f.write(table_markdown(config, summary, lpips_note, method_label))
  return summary


def evaluate_seeds(config: ml_collections.ConfigDict, model: nn.Module, variables: dict,
                   output_dir: str, trained: ml_collections.ConfigDict,
                   seeds: Sequence[Optional[int]], ranks: Sequence[Optional[int]],
                   **options) -> list[dict]:
  """`evaluate` for every sampling seed (`sampling_seeds`; [None]: the model as it is) and
  reference rank, printing a line each; with several seeds each goes to output_dir/seed_<S>/
  and `seeds_markdown` to output_dir/seeds.md. Returns the default-reference summaries, one
  per seed."""
  summaries = []
  for seed in seeds:
    seed_dir = output_dir
    if seed is not None:
      trained.model.sampling_seed = config.model.sampling_seed = seed
      seed_dir = os.path.join(output_dir, f'seed_{seed}') if len(seeds) > 1 else output_dir
      # The generator carries its config's inference options (a sampler's seed and steps).
      model = methods.get(trained).generator
    for rank in ranks:
      summary = evaluate(config, model, variables, seed_dir, reference_rank=rank,
                         trained=trained, **options)
      lpips = 'n/a' if summary['lpips'] is None else f'{summary["lpips"]:.3f}'
      label = ((f'seed {seed}, ' if seed is not None else '')
               + (f'rank {rank}: ' if rank else ''))
      print(f'{label}{summary["images"]} images: PSNR {summary["psnr"]:.2f} dB, SSIM '
            f'{summary["ssim"]:.3f}, LPIPS {lpips} -> {seed_dir}')
      if not rank:
        summaries.append(summary)
        if len(seeds) == 1:
          print(scoring.summary_markdown(summary['scores']))
  if len(seeds) > 1 and summaries:
    label = methods.method_class(trained).label(trained).replace(
        f'seed {seeds[-1]}', 'seeds ' + ','.join(map(str, seeds)))
    table = seeds_markdown(label, seeds, summaries)
    with open(os.path.join(output_dir, 'seeds.md'), 'w') as f:
      f.write(table)
    print(table)
  return summaries


def parse_ranks(text: str) -> list[Optional[int]]:
  """'' -> [None]; '3' -> [3]; '1,2,5' -> [1, 2, 5]; '1-10' or '1..10' -> [1, ..., 10]."""
  text = text.strip()
  if not text:
    return [None]
  ranks = []
  for part in text.split(','):
    part = part.strip().replace('..', '-')
    if '-' in part:
      lo, hi = (int(p) for p in part.split('-', 1))
      ranks += list(range(lo, hi + 1))
    else:
      ranks.append(int(part))
  if any(r < 1 for r in ranks):
    raise ValueError(f'--reference_rank={text}: ranks start at 1')
  return ranks


def release_label(with_scratch: bool, hr: bool) -> str:
  """The table row of the released Wan et al. model."""
  mode = ('scratch restoration, HR' if hr else 'scratch restoration') if with_scratch else (
      'quality restoration')
  return f'Wan et al. 2020, released weights ({mode})'


def _evaluate_release(f: dict, ranks: list) -> None:
  """evaluate --checkpoint=DIR of a converted release: the released model as a method row
  (its restored RGB, and its restored L with zero chroma) beside the paper's Wan et al. rows
  (config.method wan2020) and the trivial baselines."""
  config = f['config']
  if methods.name_of(config) != 'wan2020':
    raise ValueError(f'--checkpoint={f["checkpoint"]} is the released Wan et al. model: pass '
                     '--config=configs/baselines/wan2020.py (or a config of method wan2020)')
  if any(ranks):
    raise ValueError('--reference_rank: the released Wan et al. model takes no reference')
  restorer = wan_release.photo_restorer(f['checkpoint'], f['with_scratch'], f['hr'])
  output_dir = f['output_dir'] or os.path.join(f['checkpoint'], 'eval')
  summary = evaluate(config, None, None, output_dir, batch_size=f['batch_size'],
                     grid_rows=f['grid_rows'], max_batches=f['max_batches'],
                     source=os.path.abspath(f['checkpoint']), reference_control=False,
                     restorer=restorer, method_label=release_label(f['with_scratch'], f['hr']))
  lpips = 'n/a' if summary['lpips'] is None else f'{summary["lpips"]:.3f}'
  print(f'{summary["images"]} images: PSNR {summary["psnr"]:.2f} dB, SSIM '
        f'{summary["ssim"]:.3f}, LPIPS {lpips} -> {output_dir}')
  print(scoring.summary_markdown(summary['scores']))


def define_flags() -> dict:
  """The command-line flags (defined only when run as a program)."""
  return {
      'config': config_flags.DEFINE_config_file(
          'config', None, 'Config (configs/*.py): dataset, crops, degradation, references.'),
      'workdir': flags.DEFINE_string('workdir', '', 'Training workdir (config.json + '
                                     'checkpoints/).'),
      'checkpoint': flags.DEFINE_string('checkpoint', '', 'Exported model instead of --workdir '
                                        '(python -m pikfix_jax.export).'),
      'use_best': flags.DEFINE_bool('use_best', False, 'The best checkpoint by validation PSNR '
                                    'instead of the latest; refused when that validation split '
                                    'is the one scored (paper tables: the final checkpoint).'),
      'reference_control': flags.DEFINE_bool(
          'reference_control', True, 'Also score the reference control: every reference '
          'hue-rotated by 0, 90, 180, 270 degrees (ground truth not); does the hue of the '
          'output follow the reference\'s? (4 more forward passes per batch).'),
      'reference_rank': flags.DEFINE_string(
          'reference_rank', '', 'k (1..10), a list (1,3,10) or a range (1-10): use each '
          'image\'s k-th most similar training image as reference (paper Fig. 5).'),
      'output_dir': flags.DEFINE_string('output_dir', '', 'Where to write (default: '
                                        'WORKDIR/eval, or CHECKPOINT/eval).'),
      'batch_size': flags.DEFINE_integer('batch_size', None, 'Evaluation batch size (default: '
                                         'config.train.eval_batch_size).'),
      'grid_rows': flags.DEFINE_integer('grid_rows', 8, 'Images in grid.png.'),
      'max_batches': flags.DEFINE_integer('max_batches', None, 'Stop after this many batches '
                                          '(quick checks; the numbers are then partial).'),
      'with_scratch': flags.DEFINE_bool(
          'with_scratch', False, '--checkpoint of a converted Wan et al. release '
          '(convert_weights --arch=bopbtl): its scratch restoration (detector + partial '
          'nonlocal mapping) instead of its quality restoration.'),
      'sampling_seeds': flags.DEFINE_string(
          'sampling_seeds', '', 'Comma-separated sampling seeds of a method that samples '
          '(wan_ldm): each scored into <output_dir>/seed_<S>/, their mean and spread in '
          'seeds.md. Default for such a method: its config\'s sampling_seed and the next two.'),
      'hr': flags.DEFINE_bool('hr', False, 'With --with_scratch: the release\'s high-resolution '
                              'patch-attention mapping.'),
  }


_FLAGS: dict = {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup()
  f = {k: v.value for k, v in _FLAGS.items()}
  if f['config'] is None:
    print('error: --config is required', file=sys.stderr)
    sys.exit(2)
  try:
    ranks = parse_ranks(f['reference_rank'])
    if f['checkpoint'] and wan_release.is_release_dir(f['checkpoint']):
      _evaluate_release(f, ranks)
      return
    if f['with_scratch'] or f['hr']:
      raise ValueError('--with_scratch/--hr score the released Wan et al. model: pass '
                       '--checkpoint=DIR of python -m data_prep.convert_weights --arch=bopbtl')
    model, variables, trained, info = loading.load_generator_info(
        f['workdir'] or None, f['checkpoint'] or None, f['use_best'])
    config = f['config']
    if f['use_best'] and artifacts.is_workdir(os.path.dirname(info['source'])):
      check_selection(config, trained, os.path.dirname(info['source']))
    if f['checkpoint'] and artifacts.is_export(info['source']):
      check_export_selection(config, trained, info['source'])
    method, trained_method = methods.name_of(config), methods.name_of(trained)
    if method != trained_method:
      raise ValueError(f'--config trains method {method!r} but the checkpoint holds '
                       f'{trained_method!r}; pass the config it was trained with')
    if apply_inference_options(config, trained):
      model = methods.get(trained).generator
    seeds = sampling_seeds(f['sampling_seeds'], trained)
    check_model_config(config, trained)
    if not config.backbones.lpips and trained.backbones.lpips:
      config.backbones.lpips = trained.backbones.lpips
    if 'arcface' in config.backbones and not config.backbones.arcface:
      config.backbones.arcface = trained.backbones.get('arcface', '')
    output_dir = f['output_dir'] or os.path.join(f['workdir'] or f['checkpoint'], 'eval')
    evaluate_seeds(config, model, variables, output_dir, trained, seeds, ranks,
                   batch_size=f['batch_size'], grid_rows=f['grid_rows'],
                   max_batches=f['max_batches'], source=info['source'], step=info['step'],
                   reference_control=f['reference_control'])
  except (artifacts.RestoreError, ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  _FLAGS.update(define_flags())
  app.run(main)
