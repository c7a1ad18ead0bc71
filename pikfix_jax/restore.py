"""Restore and colorize old photos with a trained model (docs/RESTORE.md).

  python -m pikfix_jax.restore --workdir=DIR | --checkpoint=PATH \
      --input=FILE_OR_DIR --output=FILE_OR_DIR \
      [--reference=IMG | --reference_dir=DIR [--index=PATH] [--top_k=K]] \
      [--compare] [--reference_size=512] [--use_best] [--sampling_steps=N] [--seed=S] \
      [--faces={wan,gfpgan} --face_checkpoint=PATH [--save_faces]]

This module is the program: its flags, the run over every input file with a progress bar, the
messages and the exit code. What it runs (loading the model, picking references, restoring a
file, faces) is the library pikfix_jax/restoring.py, which the web app shares.
"""

import dataclasses
import os
import sys
import time
from typing import Optional

from absl import app
from absl import flags
import tqdm

from pikfix_jax import artifacts
from pikfix_jax import cli
from pikfix_jax import faces
from pikfix_jax import image_io
from pikfix_jax import inference
from pikfix_jax import restoring


def run(options: restoring.Options, restorer: Optional[inference.PhotoRestorer] = None,
        out=None) -> tuple[int, list[restoring.Result]]:
  """Restores every input; returns (exit code, results). Messages go to `out` (stderr).

  Exit code 0 when every photo was written, 1 when any failed (each failure is named in the
  summary), 2 for a usage error (nothing processed).
  """
  out = out or sys.stderr
  say = lambda msg: tqdm.tqdm.write(msg, file=out)
  try:
    pairs = restoring.plan(options)
    config = None
    if restorer is None:
      restorer, config = restoring.build_restorer(options)
    if options.scratch_mask:
      if not getattr(restorer, 'accepts_mask', False):
        raise artifacts.RestoreError('--scratch_mask: this method takes no defect mask (only '
                                     'wan2020, and a converted release with --with_scratch, do)')
      if len(pairs) != 1:
        raise artifacts.RestoreError('--scratch_mask is the mask of one photo: give one --input')
      restorer.mask = restoring.read_mask(options.scratch_mask,
                                          image_io.read_image(pairs[0][0]).shape[:2])
    # --faces: after the photo's restoration
    restorer.face_enhancer = restoring.face_enhancer(options)
    picker = None
    if not restorer.uses_reference:
      if options.reference or options.reference_dir or options.index:
        say('note: this method takes no colour reference; --reference/--reference_dir ignored')
      return _run_files(restorer, None, pairs, options, out, say)
    restoring.check_reference_source(options)
    if (len(restoring.reference_paths(options.reference)) > 1 and
        not getattr(restorer, 'multi_reference', False)):
      raise artifacts.RestoreError('several --reference given; this model takes one (several '
                                   'references: a Pik-Fix workdir or orbax export)')
    vgg19 = options.vgg19
    if vgg19 is None:
      vgg19 = config.backbones.vgg19 if config is not None else ''
      if vgg19 and not os.path.exists(vgg19):
        vgg19 = ''
    picker = restoring.ReferencePicker(options.reference, options.reference_dir,
                                       options.index, options.top_k, vgg19,
                                       options.index_image_size)
  except (artifacts.RestoreError, image_io.ImageReadError, ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=out)
    return 2, []
  return _run_files(restorer, picker, pairs, options, out, say)


def _run_files(restorer: inference.PhotoRestorer, picker: Optional[restoring.ReferencePicker],
               pairs: list, options: restoring.Options, out, say
               ) -> tuple[int, list[restoring.Result]]:
  """Restores each (src, dst) pair; the exit code and results of `run`."""
  results = []
  start = time.perf_counter()
  bar = tqdm.tqdm(pairs, unit='photo', desc='restore', disable=len(pairs) == 1, file=out)
  for src, dst in bar:
    try:
      results.append(restoring.restore_file(restorer, picker, src, dst, options, say))
    except Exception as e:  # pylint: disable=broad-except
      reason = str(e).replace('\n', ' ') or type(e).__name__
      if isinstance(e, image_io.ImageReadError) and reason.startswith(src):
        reason = reason[len(src):].lstrip(': ')
      results.append(restoring.Result(src, error=f'{type(e).__name__}: {reason}'))
      say(f'failed: {src}: {reason}')
  bar.close()
  failed = [r for r in results if r.error]
  done = len(results) - len(failed)
  seconds = time.perf_counter() - start
  if len(results) == 1 and not failed:
    reference = results[0].reference or 'none: the method takes no reference'
    say(f'wrote {results[0].output} (reference {reference}, {seconds:.1f} s)')
  else:
    say(f'restored {done} of {len(results)} photos in {seconds:.1f} s -> {options.output}')
  if failed:
    say(f'{len(failed)} failed:')
    for r in failed:
      say(f'  {r.input}: {r.error}')
  return (1 if failed else 0), results


# ---------------------------------------------------------------------------------- CLI

def define_flags() -> dict:
  """Defines the command-line flags; only when run as a program (other modules import this
  one, and an absl flag can be defined once). Returns {Options field: flag holder}."""
  d = {}
  d['workdir'] = flags.DEFINE_string('workdir', '', 'Training workdir (config.json, checkpoints/).')
  d['checkpoint'] = flags.DEFINE_string('checkpoint', '', 'Exported model directory '
                                        '(python -m pikfix_jax.export, either --format).')
  d['use_best'] = flags.DEFINE_bool('use_best', False, 'With --workdir: the best checkpoint by '
                                    'validation PSNR instead of the latest.')
  d['input'] = flags.DEFINE_string('input', None, 'Photo file, or a folder of photos (recursive).')
  d['output'] = flags.DEFINE_string('output', None, 'Output file (format from its extension), '
                                    'or a folder.')
  d['reference'] = flags.DEFINE_multi_string(
      'reference', [], 'Colour reference image; repeat it for several references at once '
      '(Pik-Fix: the warp attends over all of them).')
  d['reference_dir'] = flags.DEFINE_string(
      'reference_dir', '', 'Folder of colour photos: the most similar one (paper sec. 3.5) '
      'becomes each photo\'s reference.')
  d['index'] = flags.DEFINE_string(
      'index', '', 'Reference index of --reference_dir (data_prep.build_reference_index); '
      'default: built on the fly, cached under ~/.cache/pikfix_jax/reference_index.')
  d['top_k'] = flags.DEFINE_integer('top_k', 1, 'Report this many best matches (rank 1 is used).')
  d['compare'] = flags.DEFINE_bool('compare', False, 'Also write <output>_compare.png: input | '
                                   'reference | output.')
  d['reference_size'] = flags.DEFINE_integer(
      'reference_size', inference.DEFAULT_REFERENCE_SIZE, 'Longer side of the resized reference '
      '(multiple of 32; at most the padded input\'s longer side).')
  d['keep_alpha'] = flags.DEFINE_bool('keep_alpha', True, 'Copy the input\'s transparency to '
                                      'PNG/TIFF/WebP outputs.')
  d['format'] = flags.DEFINE_string('format', '', 'Output format for folders (png, jpg, tif, '
                                    '...); default: the input\'s.')
  d['tile_size'] = flags.DEFINE_integer(
      'tile_size', inference.DEFAULT_TILE_SIZE,
      'Largest restoration window side (px, multiple of 32; 0: whole image at once). Tiling is '
      'exact.')
  d['color_max_pixels'] = flags.DEFINE_integer(
      'color_max_pixels', inference.DEFAULT_COLOR_MAX_PIXELS,
      'Larger images are colorized at this many pixels and the colour upsampled (0: always at '
      'full resolution).')
  d['dtype'] = flags.DEFINE_enum('dtype', '', ['', 'float32', 'bfloat16'],
                                 'Compute dtype override (default: the model config\'s).')
  d['query_chunk'] = flags.DEFINE_integer('query_chunk', 0, 'Similarity warp chunk override '
                                          '(query positions per block).')
  d['vgg19'] = flags.DEFINE_string('vgg19', None, 'VGG-19 weights for retrieval (default: the '
                                   'model config\'s backbones.vgg19 when that file exists).')
  d['index_image_size'] = flags.DEFINE_integer('index_image_size', 0, 'Image size of an index '
                                               'built on the fly (default 224).')
  d['scratch_mask'] = flags.DEFINE_string(
      'scratch_mask', '', 'Wan et al. (method wan2020, or a release with --with_scratch) only: '
      'an image of the photo\'s size, white where it is scratched, used instead of the '
      'scratch detector\'s mask (one photo).')
  d['with_scratch'] = flags.DEFINE_bool(
      'with_scratch', False, 'With --checkpoint of a converted Wan et al. release '
      '(convert_weights --arch=bopbtl): detect scratches and inpaint them (the release\'s '
      '--with_scratch); without: its quality restoration.')
  d['hr'] = flags.DEFINE_bool('hr', False, 'With --with_scratch: the release\'s high-resolution '
                              'scratch restoration (multi-scale patch attention, --HR).')
  d['test_mode'] = flags.DEFINE_enum('test_mode', 'Full', ['Full', 'Scale'],
                                     'Release, no scratches: Full (sides to multiples of 4) or '
                                     'Scale (short side 256), as the release\'s test.py.')
  d['colorize_with'] = flags.DEFINE_string(
      'colorize_with', '', 'A trained Pik-Fix (workdir or export) that colours the restored '
      'photo with --reference/--reference_dir: restoration by the first model, colour by this.')
  d['sampling_steps'] = flags.DEFINE_integer(
      'sampling_steps', 0, 'A sampling method (wan_ldm): DDIM steps (default 0: the '
      'checkpoint\'s config.model.sampling_steps).')
  d['seed'] = flags.DEFINE_integer(
      'seed', None, 'A sampling method (wan_ldm): the seed of the sampler\'s noise (default: '
      'the checkpoint\'s config.model.sampling_seed); the same seed gives the same output.')
  d['faces'] = flags.DEFINE_enum(
      'faces', '', ['', *faces.KINDS], 'After restoring each photo, detect its faces (dlib), '
      'align, restore them with a face network and paste them back: wan (Wan et al.\'s '
      'pipeline) or gfpgan (GFP-GAN\'s). Needs pip install -e .[faces].')
  d['face_checkpoint'] = flags.DEFINE_string(
      'face_checkpoint', '', 'With --faces: the face network\'s converted weights (gfpgan: '
      'data_prep.convert_weights --arch=gfpgan), or for gfpgan a training workdir of '
      'configs/baselines/gfpgan.py.')
  d['save_faces'] = flags.DEFINE_bool('save_faces', False, 'With --faces: also write each '
                                      'face\'s aligned crop, <output>_faceNN_before.png, and '
                                      'its restoration, _after.png.')
  return d


_FLAGS: dict = {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = {k: v.value for k, v in _FLAGS.items()}
  cli.setup()
  if not f['input'] or not f['output']:
    print('error: --input and --output are required', file=sys.stderr)
    sys.exit(2)
  options = restoring.Options(**{field.name: f[field.name]
                                 for field in dataclasses.fields(restoring.Options)})
  code, _ = run(options)
  sys.exit(code)


if __name__ == '__main__':
  _FLAGS.update(define_flags())
  app.run(main)
