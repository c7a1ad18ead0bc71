"""Evaluation: CSVs, the Table-1 Markdown, the grid, LPIPS on/off, reference ranks, the CLI."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_TRAINING, tiny_train_config
from pikfix_jax import artifacts
from pikfix_jax import evaluate
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import scoring
from pikfix_jax import weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_TRAIN = ('astronaut', 'rocket', 'motorcycle_left', 'motorcycle_right', 'hubble_deep_field',
              'ihc', 'retina')


@pytest.fixture(scope='module')
def generator(initial_workdir):
  return loading.load_generator_info(workdir=initial_workdir)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_evaluation_writes_csvs_table_and_grid(tmp_path, generator):
  model, variables, _, info = generator
  config = tiny_train_config()
  config.data.degrade = True
  out = str(tmp_path / 'eval')
  summary = evaluate.evaluate(config, model, variables, out, source=info['source'],
                              step=info['step'])
  assert sorted(os.listdir(out)) == ['grid.png', 'metrics.csv', 'per_image.csv', 'table.md']
  per_image = _rows(os.path.join(out, 'per_image.csv'))
  # The demo test split in order, every image with the model, its control and the baselines.
  n = len(scoring.ROWS)
  assert [(r['id'], r['method']) for r in per_image[:n]] == [('chelsea', m) for m in scoring.ROWS]
  assert [r['id'] for r in per_image[n:]] == ['coffee'] * n
  psnr = {(r['id'], r['method']): float(r['psnr']) for r in per_image}
  assert all(5 < p < 50 for p in psnr.values()) and all(r['lpips'] == '' for r in per_image)
  rows = {r['method']: r for r in _rows(os.path.join(out, 'metrics.csv'))}
  assert list(rows) == list(scoring.ROWS)
  for method, row in rows.items():
    assert row['images'] == '2' and row['step'] == str(info['step']) and row['lpips'] == ''
    assert float(row['psnr']) == pytest.approx(
        np.mean([psnr[(i, method)] for i in ('chelsea', 'coffee')]), abs=1e-5)
  assert float(rows['model']['ssim']) == pytest.approx(summary['ssim'], abs=1e-5)
  table = open(os.path.join(out, 'table.md')).read()
  ours = f'| Pik-Fix, pikfix_jax (this run) | {summary["psnr"]:.2f} | {summary["ssim"]:.3f} | n/a ¹ |'
  assert ours in table
  for method in scoring.BASELINES + (scoring.SHUFFLED,):
    s = summary['scores']['rows'][method]
    assert f'| {scoring.LABELS[method]} | {s["psnr"]:.2f} | {s["ssim"]:.3f} | n/a ¹ |' in table
  assert 'Reference control' in table and 'Restoration (L channel' in table
  assert 'LPIPS not computed' in table and "authors: sRGB" in table and '11x11 Gaussian' in table
  assert 'LPIPS AlexNet v0.1' in table and '--arch=lpips_alex' in table  # the authors' network
  assert summary['lpips'] is None

  # The paper's row appears for the paper's datasets (layout only: no data needed).
  config.dataset, config.data.degrade = 'voc', True
  table = evaluate.table_markdown(config, dict(summary, lpips=0.2), '')
  paper = '| Pik-Fix (paper, Table 1, Pascal VOC (w/ degradation)) | 22.22 | 0.828 | 0.186 |'
  assert paper in table
  assert '| Pik-Fix, pikfix_jax (this run) |' in table


@pytest.mark.slow
def test_lpips_is_reported_with_weights(tmp_path, generator):
  model, variables, _, _ = generator
  path = str(tmp_path / 'lpips_alex.msgpack')  # the default 'authors' convention's network
  weights.save_variables(path, weights.random_variables('lpips_alex', seed=1))
  config = tiny_train_config()
  config.backbones.lpips = path
  summary = evaluate.evaluate(config, model, variables, str(tmp_path / 'eval'))
  per_image = _rows(str(tmp_path / 'eval' / 'per_image.csv'))
  assert all(float(r['lpips']) > 0 for r in per_image)
  values = [float(r['lpips']) for r in per_image if r['method'] == 'model']
  assert summary['lpips'] == pytest.approx(np.mean(values), abs=1e-5)
  assert 'n/a' not in open(tmp_path / 'eval' / 'table.md').read()


def _tensorboard_scalars(workdir: str, step: int) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for name in sorted(os.listdir(workdir)):
    if name.startswith('events.out.tfevents'):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        for v in event.summary.value:
          value = tf.make_ndarray(v.tensor) if v.HasField('tensor') else None
          if event.step == step and value is not None and value.ndim == 0:
            values[v.tag] = float(value)
  return values


@TINY_TRAINING
@pytest.mark.slow
def test_tensorboard_validation_equals_the_table_for_the_same_checkpoint(tmp_path,
                                                                          trained_workdir):
  """Training-time validation and evaluate score with the same code and convention."""
  model, variables, _, info = loading.load_generator_info(workdir=trained_workdir)
  summary = evaluate.evaluate(tiny_train_config(), model, variables, str(tmp_path / 'eval'),
                              source=info['source'], step=info['step'])
  logged = _tensorboard_scalars(trained_workdir, info['step'])
  assert logged['val_psnr'] == pytest.approx(summary['psnr'], abs=1e-4)
  assert logged['val_ssim'] == pytest.approx(summary['ssim'], abs=1e-5)
  assert logged['val_tint_psnr'] == pytest.approx(
      summary['scores']['rows'][scoring.TINT]['psnr'], abs=1e-4)


def test_reference_rank_uses_the_kth_training_image(tmp_path, generator):
  model, variables, _, _ = generator
  config = tiny_train_config()
  with pytest.raises(ValueError, match='retrieval_index'):
    evaluate.evaluate(config, model, variables, str(tmp_path / 'none'), reference_rank=2)

  # A hand-made index over the demo train + test images (paths match ids by suffix).
  paths = [f'/photos/{n}.png' for n in DEMO_TRAIN + ('chelsea', 'coffee')]
  neighbors = np.full((len(paths), 4), -1, np.int64)
  neighbors[7] = [5, 1, 6, 0]  # chelsea: ihc, rocket, retina, astronaut
  neighbors[8] = [2, 4, 3, 1]  # coffee: motorcycle_left, hubble, motorcycle_right, rocket
  index = str(tmp_path / 'index.npz')
  np.savez(index, paths=np.array(paths), neighbors=neighbors)
  config.data.retrieval_index = index
  config.data.eval_reference_query = 'image'  # The hand-made index has no features to query.
  out = str(tmp_path / 'eval')
  results = {}
  for rank in (3, 1):
    results[rank] = evaluate.evaluate(config, model, variables, out, reference_rank=rank)
    per_image = [r for r in _rows(os.path.join(out, f'per_image_rank{rank}.csv'))
                 if r['method'] == 'model']
    want = {1: ['ihc', 'motorcycle_left'], 3: ['retina', 'motorcycle_right']}[rank]
    assert [r['reference'] for r in per_image] == [f'train:{n}' for n in want]
  sensitivity = _rows(os.path.join(out, 'reference_sensitivity.csv'))
  assert [r['rank'] for r in sensitivity] == ['1', '3']  # one row per rank, sorted
  assert float(sensitivity[1]['psnr']) == pytest.approx(results[3]['psnr'], abs=1e-5)
  assert results[1]['psnr'] != results[3]['psnr']  # another reference, another result
  md = open(os.path.join(out, 'reference_sensitivity.md')).read()
  assert '| 1 |' in md and '23.95' in md and '| 3 |' in md
  assert not os.path.exists(os.path.join(out, 'metrics.csv'))
  assert evaluate.parse_ranks('1-3,10') == [1, 2, 3, 10] and evaluate.parse_ranks('') == [None]


@pytest.mark.slow
def test_cli(tmp_path, initial_workdir):
  out = str(tmp_path / 'cli')
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.evaluate', '--config=configs/demo.py',
       f'--workdir={initial_workdir}', f'--output_dir={out}', '--config.data.eval_image_size=32',
       '--config.train.eval_batch_size=2', '--config.data.degrade=False'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '8 images: PSNR' in result.stdout  # demo.py: 2 photos x 4 hue rotations
  assert 'Reference control' in result.stdout
  assert "using the checkpoint's" in result.stderr  # demo.py's model differs from the tiny one
  assert os.path.exists(os.path.join(out, 'table.md'))


@pytest.mark.parametrize('name', [
    'table4_input_ab_fusion', 'table4_multiscale_ab_fusion', 'table4_single_scale_histogram',
    'table4_multiscale_histogram', 'table5_no_similarity', 'table5_single_similarity',
    'table5_multiscale_similarity', 'table6_single_level_rdn', 'table6_multi_level_rdn'])
def test_ablation_configs_build_their_model(name):
  from configs import ablations  # pylint: disable=g-import-not-at-top
  config = ablations.get_config(name)
  table = name.split('_')[0]
  assert config.dataset == ('voc' if table == 'table6' else 'div2k')
  assert bool(config.data.degrade) == (table == 'table6')
  params = methods.get(config).abstract_variables()['params']
  assert ('similarity_net' in params) == (config.model.similarity.mode != 'none')
  levels = [k for k in params['restoration_net'] if k.startswith('level_x')]
  assert len(levels) == len(config.model.restoration.levels)


def test_ablation_variants_and_old_files_are_one_line_errors():
  from configs import ablations  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'configs/ablations.py:NAME, NAME one of table4_input'):
    ablations.get_config('no_sphist')
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.model_summary',
       '--config=configs/ablations/table5_no_similarity.py'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'configs/ablations/table5_no_similarity.py is gone: use '
      '--config=configs/ablations.py:table5_no_similarity')


def test_use_best_is_refused_on_the_split_it_was_chosen_on():
  from configs import div2k, pascal_voc, realold_eval  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'--use_best: .*best was chosen by PSNR on div2k/validation'):
    evaluate.check_selection(div2k.get_config(), div2k.get_config(), '/runs/div2k')
  # A VOC model's best/ (chosen on voc/test) may be scored on RealOld.
  evaluate.check_selection(realold_eval.get_config(), pascal_voc.get_config(), '/runs/voc')
  # best/ chosen on training images held out for selection may be scored on the test split.
  held_out = div2k.get_config()
  held_out.data.selection_size = 50
  evaluate.check_selection(div2k.get_config(), held_out, '/runs/div2k')


def _whole_image_scores(config, model, variables, out) -> tuple[float, float, tuple]:
  """(PSNR evaluate reports for the first image scored whole, the PSNR of what the method's
  `make_restorer` gives on that image, the image's (H, W))."""
  from pikfix_jax import methods  # pylint: disable=g-import-not-at-top
  from pikfix_jax import metrics  # pylint: disable=g-import-not-at-top
  from pikfix_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  config.data.eval_image_size = 0
  summary = evaluate.evaluate(config, model, variables, out, max_batches=1,
                              reference_control=False, trained=config)
  assert summary['eval_image_size'] == 0 and summary['images'] == 1
  model_rows = [r for r in _rows(os.path.join(out, 'per_image.csv')) if r['method'] == 'model']
  batch = next(input_pipeline.eval_dataset(config, batch_size=1).as_numpy_iterator())
  assert model_rows[0]['id'] == batch['id'][0].decode()
  rgb = methods.get(config).make_restorer(variables)(batch['input_l'][0],
                                                      batch['reference_rgb'][0])
  target = batch['target_lab']
  target8 = metrics.quantize(scoring.lab_to_rgb(target[..., :1], target[..., 1:]))
  want = float(metrics.psnr(target8, metrics.quantize(rgb[None]))[0])
  return float(model_rows[0]['psnr']), want, batch['input_l'].shape[1:3]


@pytest.mark.slow
def test_whole_image_evaluation_of_pikfix_is_its_restorer(tmp_path, generator):
  """eval_image_size=0: the score of Pik-Fix's own engine (exact tiling) on the whole photo."""
  model, variables, trained, _ = generator
  got, want, hw = _whole_image_scores(trained, model, variables, str(tmp_path / 'eval'))
  assert hw == (300, 451)  # chelsea, whole
  assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['pix2pix', 'cms4cv_unet', 'wan2020'])
def test_whole_image_evaluation_of_every_baseline_is_its_restorer(tmp_path, name):
  """eval_image_size=0 scores Pix2pix, CMS4CV and Wan et al. through their `make_restorer`
  (evaluate built Pik-Fix's Restorer for every method, which failed for these)."""
  import jax  # pylint: disable=g-import-not-at-top
  from pikfix_jax import methods  # pylint: disable=g-import-not-at-top
  from test_methods import tiny_baseline  # pylint: disable=g-import-not-at-top
  from test_methods_wan2020 import tiny_wan  # pylint: disable=g-import-not-at-top
  config = tiny_wan() if name == 'wan2020' else tiny_baseline(name)
  method = methods.get(config)
  variables = jax.jit(method.generator.init)(
      jax.random.PRNGKey(0), np.zeros((1, 32, 32, 1), np.float32),
      np.zeros((1, 32, 32, 3), np.float32))
  got, want, hw = _whole_image_scores(config, method.generator, variables,
                                      str(tmp_path / 'eval'))
  assert hw == (300, 451)
  assert got == pytest.approx(want, abs=1e-5)


def test_export_made_with_use_best_is_refused_on_the_split_it_was_chosen_on(tmp_path):
  """evaluate --checkpoint=EXPORT reads export.json: an `export --use_best` of a workdir without
  a selection split is refused, in one line naming data.selection_size, as --use_best is."""
  import json  # pylint: disable=g-import-not-at-top
  from configs import div2k, realold_eval, pascal_voc  # pylint: disable=g-import-not-at-top

  def exported(use_best: bool) -> str:
    path = tmp_path / f'export_{use_best}'
    path.mkdir()
    (path / artifacts.EXPORT_META).write_text(json.dumps(
        {'workdir': '/runs/div2k', 'checkpoint': '/runs/div2k/best', 'use_best': use_best}))
    return str(path)

  best, final = exported(True), exported(False)
  with pytest.raises(ValueError) as refused:
    evaluate.check_export_selection(div2k.get_config(), div2k.get_config(), best)
  message = str(refused.value)
  assert '\n' not in message and message.startswith(f'--checkpoint={best} was exported with '
                                                    '--use_best: /runs/div2k/best was chosen')
  assert 'data.selection_size' in message and 'export without --use_best' in message
  evaluate.check_export_selection(div2k.get_config(), div2k.get_config(), final)
  held_out = div2k.get_config()
  held_out.data.selection_size = 50
  evaluate.check_export_selection(div2k.get_config(), held_out, best)
  evaluate.check_export_selection(realold_eval.get_config(), pascal_voc.get_config(), best)


@pytest.mark.slow
def test_cli_refuses_an_export_of_best_without_a_selection_split(tmp_path, initial_workdir):
  from pikfix_jax import export  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'best_export')
  assert export.export(initial_workdir, out, use_best=True)['use_best']
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.evaluate', '--config=configs/demo.py',
       f'--checkpoint={out}', f'--output_dir={tmp_path / "eval"}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 1, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f'error: --checkpoint={out} was exported with --use_best: ')
  assert '--config.data.selection_size=N' in last
  assert not os.path.exists(tmp_path / 'eval')


def test_every_paper_table_command_of_reproduce_md_shows_its_paper_row():
  """Each `evaluate` command of docs/REPRODUCE.md for Pik-Fix, Pix2pix and Wan et al. (with its
  --config.dataset / --config.data.degrade overrides) writes a table with the paper's row."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  text = open(os.path.join(REPO, 'docs', 'REPRODUCE.md')).read().replace('\\\n', ' ')
  variables = dict(re.findall(r'^(\w+)=(configs/\S+\.py)$', text, re.M))
  summary = {'scores': {'rows': {}, 'images': 0}, 'lpips': None, 'images': 0, 'split': 'test',
             'reference': '', 'checkpoint': '', 'step': 0, 'eval_image_size': 256,
             'conventions': ''}
  checked = []
  for command in re.findall(r'python -m pikfix_jax\.evaluate (.*)', text):
    path = re.search(r'--config=(\S+)', command).group(1)
    path = variables.get(path.lstrip('$'), path)
    if not os.path.exists(os.path.join(REPO, path)):  # a loop variable ($m, $ROW)
      continue
    spec = importlib.util.spec_from_file_location('reproduce_config', os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if not methods.method_class(config).paper_rows:  # CMS4CV (the report's own table), wan_ldm
      continue
    for key, value in re.findall(r'--config\.(dataset|data\.degrade)=(\S+)', command):
      if key == 'dataset':
        config.dataset = value
      else:
        config.data.degrade = value == 'True'
    table = evaluate.table_markdown(config, summary, '')
    assert '(paper, ' in table, (command, config.dataset, config.data.degrade)
    checked.append((config.get('method', 'pikfix'), config.dataset, bool(config.data.degrade)))
  assert ('wan2020', 'realold', False) in checked and ('pix2pix', 'realold', False) in checked
  assert len(checked) >= 11
