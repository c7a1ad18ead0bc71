"""Restore and colorize old photos with a trained Pik-Fix (docs/RESTORE.md).

  python -m pikfix_jax.restore --workdir=DIR | --checkpoint=PATH \
      --input=FILE_OR_DIR --output=FILE_OR_DIR \
      [--reference=IMG | --reference_dir=DIR [--index=PATH] [--top_k=K]] \
      [--compare] [--reference_size=512] [--use_best] \
      [--faces={wan,gfpgan} --face_checkpoint=PATH [--save_faces]]

The input (grey or colour, any size from 8x8 up; EXIF orientation applied; 16-bit, RGBA,
JPEG, TIFF, ... via `image_io.read_image`) goes through `inference.Restorer` (or
`inference.ExportedRestorer` for a `--format=stablehlo` export): padded to a multiple of 32,
restored window by window, colorized with the reference resized so that its longer side is
min(--reference_size, the padded input's longer side), and cropped back. This module is the
program: file handling, reference picking (one image, or retrieval from a folder), --compare
images and flags.
"""

import dataclasses
import hashlib
import os
import sys
import time
from typing import Callable, Optional, Sequence, Union

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps
import tqdm

from pikfix_jax import artifacts
from pikfix_jax import cli
from pikfix_jax import faces
from pikfix_jax import image_io
from pikfix_jax import inference
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import retrieval
from pikfix_jax import wan_release
from pikfix_jax import weights

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.gif')
ALPHA_FORMATS = ('.png', '.tif', '.tiff', '.webp')
WRITE_EXTENSIONS = tuple(image_io._WRITE_FORMATS)  # pylint: disable=protected-access
COMPARE_MAX_HEIGHT = 1024  # Panels of the --compare image are at most this high.

# ------------------------------------------------------------------------------ references

def list_images(directory: str, exclude: Optional[str] = None) -> list[str]:
  """Image files under `directory` (recursive, by extension, hidden names skipped), sorted."""
  out = []
  exclude = os.path.abspath(exclude) if exclude else None
  for root, dirs, names in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.') and
                     (exclude is None or os.path.abspath(os.path.join(root, d)) != exclude))
    for name in names:
      if not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        out.append(os.path.join(root, name))
  return sorted(out)


def default_index_path(reference_dir: str, image_size: int) -> str:
  """Cache file of the index built on the fly for a corpus folder."""
  root = os.environ.get('PIKFIX_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache',
                                                            'pikfix_jax')
  key = hashlib.sha1(f'{os.path.abspath(reference_dir)}|{image_size}'.encode()).hexdigest()[:16]
  name = os.path.basename(os.path.abspath(reference_dir).rstrip('/')) or 'corpus'
  return os.path.join(root, 'reference_index', f'{name}-{key}.npz')


def reference_paths(reference: Union[str, Sequence[str]]) -> list[str]:
  """--reference as a list of paths ('' or [] -> []; it is repeatable: several references)."""
  if isinstance(reference, str):
    return [reference] if reference else []
  return [r for r in reference if r]


class ReferencePicker:
  """The reference of each photo: fixed files (one, or several for Pik-Fix's multi-reference
  warp), or the best match in a corpus (sec. 3.5)."""

  def __init__(self, reference: Union[str, Sequence[str]] = '', reference_dir: str = '',
               index: str = '', top_k: int = 1, vgg19: str = '', index_image_size: int = 0):
    self.fixed = None
    self.top_k = max(1, top_k)
    self.reference_dir = reference_dir
    self.index = None
    paths = reference_paths(reference)
    if paths:
      self.fixed_path = ', '.join(paths)
      images = [image_io.read_image(p) for p in paths]
      self.fixed = images[0] if len(images) == 1 else images
      return
    vgg = None
    if vgg19:
      vgg = weights.maybe_load_backbone(vgg19, 'vgg19', weights.variable_shapes('vgg19'))
    image_size = index_image_size or retrieval.DEFAULT_IMAGE_SIZE
    if index and os.path.exists(index):
      self.index = retrieval.ReferenceIndex.load(index, vgg)
      if self.index.meta.get('pretrained') and vgg is None:
        raise artifacts.RestoreError(
            f'--index={index} was built with pretrained VGG-19 weights; pass '
            'the same file as --vgg19=FILE')
      if reference_dir:
        corpus = list_images(reference_dir)
        missing = set(map(os.path.abspath, corpus)) - set(map(os.path.abspath, self.index.paths))
        if missing:
          logging.warning('%d images of %s are not in the index %s; rebuild it to use them.',
                          len(missing), reference_dir, index)
      return
    if not reference_dir:
      raise artifacts.RestoreError(
          f'--index={index}: no such file (and no --reference_dir to build it '
          'from)')
    corpus = [os.path.abspath(p) for p in list_images(reference_dir)]
    if not corpus:
      raise artifacts.RestoreError(f'--reference_dir={reference_dir}: no images found')
    path = index or default_index_path(reference_dir, image_size)
    logging.info('Building the reference index of %s (%d images) -> %s', reference_dir,
                 len(corpus), path)
    self.index = retrieval.build_index(corpus, path, vgg_variables=vgg, image_size=image_size,
                                       neighbors_k=0, batch_size=min(16, len(corpus)))
    if not self.index.paths:
      raise artifacts.RestoreError(
          f'--reference_dir={reference_dir}: none of its images is readable')

  def _resolve(self, path: str) -> str:
    if os.path.exists(path) or not self.reference_dir:
      return path
    for candidate in (os.path.join(self.reference_dir, path),
                      os.path.join(self.reference_dir, os.path.basename(path))):
      if os.path.exists(candidate):
        return candidate
    return path

  def pick(self, image: np.ndarray, input_path: str = ''
           ) -> tuple[str, np.ndarray, list[tuple[str, float]]]:
    """(path, sRGB image, ranked candidates [(path, score)]) of the reference for `image`
    (several fixed references: their paths joined by ', ' and a list of images)."""
    if self.fixed is not None:
      return self.fixed_path, self.fixed, []
    ranked = self.index.query(image, top_k=self.top_k + 1)
    if input_path:  # Never the photo itself, when it is part of the corpus.
      me = os.path.abspath(input_path)
      ranked = [(p, s) for p, s in ranked if os.path.abspath(self._resolve(p)) != me]
    ranked = ranked[:self.top_k]
    if not ranked:
      raise artifacts.RestoreError('the reference corpus holds no image other than this photo')
    path = self._resolve(ranked[0][0])
    return path, image_io.read_image(path), ranked


# ---------------------------------------------------------------------------------- files

def read_mask(path: str, hw: tuple[int, int]) -> np.ndarray:
  """A defect-mask image -> (H, W) float32 in {0, 1} (white = defect), which must have the
  photo's size."""
  mask = image_io.read_image(path)
  if mask.shape[:2] != tuple(hw):
    raise artifacts.RestoreError(f'--scratch_mask={path} is {mask.shape[1]}x{mask.shape[0]} px; '
                                   f'the photo is {hw[1]}x{hw[0]}')
  return (np.mean(mask, axis=-1) > 0.5).astype(np.float32)


def read_alpha(path: str) -> Optional[np.ndarray]:
  """The alpha channel (H, W) in [0, 1] (EXIF orientation applied), or None when opaque."""
  with Image.open(path) as im:
    if im.mode not in ('RGBA', 'LA', 'PA', 'RGBa', 'La') and 'transparency' not in im.info:
      return None
    im = ImageOps.exif_transpose(im)
    alpha = np.asarray(im.convert('RGBA'), np.float32)[..., 3] / 255.0
  return None if alpha.min() >= 1.0 else alpha


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
  h, w = image.shape[:2]
  width = max(1, int(round(w * height / h)))
  return image_io.resize_float(image, height, width)


def compare_image(image: np.ndarray, reference: Union[np.ndarray, Sequence[np.ndarray]],
                  output: np.ndarray) -> np.ndarray:
  """input | reference(s) | output side by side (same height, at most COMPARE_MAX_HEIGHT)."""
  height = min(output.shape[0], COMPARE_MAX_HEIGHT)
  gap = np.ones((height, max(2, height // 64), 3), np.float32)
  references = list(reference) if isinstance(reference, (list, tuple)) else [reference]
  panels = [_fit_height(np.clip(p[..., :3], 0, 1), height)
            for p in [image] + references + [output]]
  return np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)


def compare_path(output_path: str) -> str:
  return os.path.splitext(output_path)[0] + '_compare.png'


@dataclasses.dataclass
class Options:
  """What the command line sets (see the flags)."""
  input: str
  output: str
  workdir: str = ''
  checkpoint: str = ''
  use_best: bool = False
  reference: Union[str, Sequence[str]] = ''  # one path, or several (Pik-Fix's multi-reference)
  reference_dir: str = ''
  index: str = ''
  top_k: int = 1
  compare: bool = False
  reference_size: int = inference.DEFAULT_REFERENCE_SIZE
  keep_alpha: bool = True
  format: str = ''
  tile_size: int = inference.DEFAULT_TILE_SIZE
  color_max_pixels: int = inference.DEFAULT_COLOR_MAX_PIXELS
  dtype: str = ''
  query_chunk: int = 0
  vgg19: Optional[str] = None  # None: the model config's backbones.vgg19 when that file exists.
  index_image_size: int = 0
  scratch_mask: str = ''  # Defect mask image (white = scratch) for Wan et al.'s restorer.
  # A converted Wan et al. release (--checkpoint, data_prep.convert_weights --arch=bopbtl):
  with_scratch: bool = False  # detect and inpaint scratches (the release's --with_scratch)
  hr: bool = False  # high-resolution scratch restoration (patch attention; the release's --HR)
  test_mode: str = 'Full'  # 'Full' (sides to multiples of 4) or 'Scale' (short side 256)
  colorize_with: str = ''  # Pik-Fix workdir that colours the restored photo with the reference
  faces: str = ''  # 'wan' or 'gfpgan': restore the faces of each restored photo (faces.py).
  face_checkpoint: str = ''
  save_faces: bool = False


@dataclasses.dataclass
class Result:
  input: str
  output: str = ''
  reference: str = ''
  error: str = ''
  seconds: float = 0.0


def plan(options: Options) -> list[tuple[str, str]]:
  """(input file, output file) pairs; artifacts.RestoreError for unusable paths."""
  src, dst = options.input, options.output
  fmt = options.format.lower().lstrip('.')
  if fmt and '.' + fmt not in WRITE_EXTENSIONS:
    raise artifacts.RestoreError(f'--format={options.format}: use one of '
                       f'{sorted(e[1:] for e in WRITE_EXTENSIONS)}')
  if os.path.isdir(src):
    if os.path.exists(dst) and not os.path.isdir(dst):
      raise artifacts.RestoreError(
          f'--input is a folder, so --output must be a folder; {dst} is a file')
    files = list_images(src, exclude=dst)
    if not files:
      raise artifacts.RestoreError(
          f'--input={src}: no image files ({", ".join(IMAGE_EXTENSIONS)})')
    pairs = []
    for f in files:
      stem, ext = os.path.splitext(os.path.relpath(f, src))
      ext = '.' + fmt if fmt else ext.lower()
      if ext not in WRITE_EXTENSIONS:
        ext = '.png'
      pairs.append((f, os.path.join(dst, stem + ext)))
    return pairs
  if not os.path.exists(src):
    raise artifacts.RestoreError(f'--input={src}: no such file or folder')
  if os.path.isdir(dst) or dst.endswith(os.sep):
    stem = os.path.splitext(os.path.basename(src))[0]
    dst = os.path.join(dst, stem + ('.' + fmt if fmt else '.png'))
  ext = os.path.splitext(dst)[1].lower()
  if ext not in WRITE_EXTENSIONS:
    raise artifacts.RestoreError(f'--output={dst}: unknown image extension {ext!r}; use one of '
                       f'{sorted(WRITE_EXTENSIONS)}')
  return [(src, dst)]


def restore_file(restorer: inference.PhotoRestorer, picker: Optional[ReferencePicker], src: str, dst: str,
                 options: Options, notice: Callable[[str], None]) -> Result:
  """Restores one file (raises on failure)."""
  image = image_io.read_image(src)
  alpha = read_alpha(src)
  if min(image.shape[:2]) < inference.MIN_SIDE:
    h, w = image.shape[:2]
    raise inference.InputTooSmallError(f'the photo is {w}x{h} px; the smallest supported size is '
                             f'{inference.MIN_SIDE}x{inference.MIN_SIDE}')
  if picker is None:  # A method without a reference: a neutral placeholder it ignores.
    ref_path, reference, ranked = '', np.full((inference.MIN_SIDE,) * 2 + (3,), 0.5,
                                              np.float32), []
  else:
    ref_path, reference, ranked = picker.pick(image, src)
  if len(ranked) > 1:
    others = ', '.join(f'{os.path.basename(p)} ({s:.3f})' for p, s in ranked[1:])
    notice(f'{os.path.basename(src)}: reference {os.path.basename(ref_path)} '
           f'(score {ranked[0][1]:.3f}); next best: {others}')
  out = restorer(image, reference)
  out = restore_faces(getattr(restorer, 'face_enhancer', None), out, dst, options, notice)
  ext = os.path.splitext(dst)[1].lower()
  if alpha is not None:
    if options.keep_alpha and ext in ALPHA_FORMATS:
      out = np.concatenate([out, alpha[..., None]], axis=-1)
    else:
      why = 'the output format has no alpha' if options.keep_alpha else '--nokeep_alpha'
      notice(f'{os.path.basename(src)}: transparency dropped ({why}); transparent areas were '
             'restored as white paper')
  image_io.write_image(dst, out)
  if options.compare:
    image_io.write_image(compare_path(dst), compare_image(image, reference, out[..., :3]))
  return Result(src, dst, ref_path, seconds=restorer.last_info.get('seconds', 0.0))


# -------------------------------------------------------- faces (--faces; pikfix_jax/faces.py)

def face_enhancer(options: Options) -> Optional[faces.FaceEnhancer]:
  """The --faces post-processing of every restored photo, or None (one-line errors)."""
  if not options.faces:
    if options.face_checkpoint or options.save_faces:
      raise artifacts.RestoreError('--face_checkpoint and --save_faces need --faces=wan or '
                                   '--faces=gfpgan')
    return None
  return faces.FaceEnhancer(options.faces, options.face_checkpoint)


def face_crop_path(output_path: str, index: int, which: str) -> str:
  """<output>_face01_before.png: the aligned crop of face 1 (`which` 'before') or its
  restoration ('after')."""
  return f'{os.path.splitext(output_path)[0]}_face{index + 1:02d}_{which}.png'


def restore_faces(enhancer: Optional[faces.FaceEnhancer], photo: np.ndarray, dst: str,
                  options: Options, notice: Callable[[str], None]) -> np.ndarray:
  """The photo with its faces restored (unchanged without --faces or without faces)."""
  if enhancer is None:
    return photo
  out = enhancer(photo)
  notice(f'{os.path.basename(dst)}: {len(enhancer.last_faces)} face(s) restored '
         f'(--faces={enhancer.kind})')
  if options.save_faces:
    for i, crop in enumerate(enhancer.last_faces):
      image_io.write_image(face_crop_path(dst, i, 'before'), crop.aligned)
      image_io.write_image(face_crop_path(dst, i, 'after'), crop.restored)
  return out

# ------------------------------------------------------------------------------ end of faces


def check_reference_source(options: Options) -> None:
  if not (options.reference or options.reference_dir or options.index):
    raise artifacts.RestoreError('a colour reference is needed: pass --reference=IMAGE, or '
                       '--reference_dir=DIR (a corpus of colour photos to retrieve the most '
                       'similar one from)')
  if options.reference and (options.reference_dir or options.index):
    raise artifacts.RestoreError('give either --reference or --reference_dir/--index, not both')
  if options.reference_dir and not os.path.isdir(options.reference_dir):
    raise artifacts.RestoreError(f'--reference_dir={options.reference_dir}: no such folder')
  for path in reference_paths(options.reference):
    if not os.path.exists(path):
      raise artifacts.RestoreError(f'--reference={path}: no such file')


def build_restorer(options: Options
                   ) -> tuple[inference.PhotoRestorer, Optional[ml_collections.ConfigDict]]:
  """(restorer, training config or None) of the model the options name: --workdir /
  --checkpoint (a stablehlo export, a converted release, or any method), chained with
  --colorize_with. The app (pikfix_jax/app_server.py) loads its models through this too."""
  config = None
  if options.checkpoint and artifacts.is_stablehlo_export(options.checkpoint):
    if options.dtype or options.query_chunk:
      raise artifacts.RestoreError(
          '--dtype and --query_chunk cannot change a --format=stablehlo export '
          '(they are compiled in)')
    restorer = inference.ExportedRestorer(options.checkpoint, options.reference_size)
  elif options.checkpoint and wan_release.is_release_dir(options.checkpoint):
    restorer = wan_release.photo_restorer(options.checkpoint, options.with_scratch,
                                          options.hr, options.test_mode)
  else:
    if options.with_scratch or options.hr:
      raise artifacts.RestoreError(
          '--with_scratch/--hr run the released Wan et al. model: pass --checkpoint=DIR of '
          'python -m data_prep.convert_weights --arch=bopbtl (docs/WEIGHTS.md)')
    restorer, config = _method_restorer(options, options.workdir, options.checkpoint)
  if options.colorize_with:
    colorizer, config = _method_restorer(options, options.colorize_with, '')
    if not colorizer.uses_reference:
      raise artifacts.RestoreError(f'--colorize_with={options.colorize_with}: its method '
                                   'takes no colour reference (train Pik-Fix for colour)')
    restorer = inference.Chain(restorer, colorizer)
  return restorer, config


def run(options: Options, restorer: Optional[inference.PhotoRestorer] = None,
        out=None) -> tuple[int, list[Result]]:
  """Restores every input; returns (exit code, results). Messages go to `out` (stderr).

  Exit code 0 when every photo was written, 1 when any failed (each failure is named in the
  summary), 2 for a usage error (nothing processed).
  """
  out = out or sys.stderr
  say = lambda msg: tqdm.tqdm.write(msg, file=out)
  try:
    pairs = plan(options)
    config = None
    if restorer is None:
      restorer, config = build_restorer(options)
    if options.scratch_mask:
      if not getattr(restorer, 'accepts_mask', False):
        raise artifacts.RestoreError('--scratch_mask: this method takes no defect mask (only '
                                     'wan2020, and a converted release with --with_scratch, do)')
      if len(pairs) != 1:
        raise artifacts.RestoreError('--scratch_mask is the mask of one photo: give one --input')
      restorer.mask = read_mask(options.scratch_mask, image_io.read_image(pairs[0][0]).shape[:2])
    restorer.face_enhancer = face_enhancer(options)  # --faces: after the photo's restoration
    picker = None
    if not restorer.uses_reference:
      if options.reference or options.reference_dir or options.index:
        say('note: this method takes no colour reference; --reference/--reference_dir ignored')
      return _run_files(restorer, None, pairs, options, out, say)
    check_reference_source(options)
    if (len(reference_paths(options.reference)) > 1 and
        not getattr(restorer, 'multi_reference', False)):
      raise artifacts.RestoreError('several --reference given; this model takes one (several '
                                   'references: a Pik-Fix workdir or orbax export)')
    vgg19 = options.vgg19
    if vgg19 is None:
      vgg19 = config.backbones.vgg19 if config is not None else ''
      if vgg19 and not os.path.exists(vgg19):
        vgg19 = ''
    picker = ReferencePicker(options.reference, options.reference_dir, options.index,
                             options.top_k, vgg19, options.index_image_size)
  except (artifacts.RestoreError, image_io.ImageReadError, ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=out)
    return 2, []
  return _run_files(restorer, picker, pairs, options, out, say)


def _method_restorer(options: Options, workdir: str, checkpoint: str):
  """(restorer, config) of a training workdir or an exported model, through its method."""
  _, variables, config = loading.load_generator(workdir or None, checkpoint or None,
                                                options.use_best)
  restorer = methods.get(config).make_restorer(
      variables, reference_size=options.reference_size, tile_size=options.tile_size,
      color_max_pixels=options.color_max_pixels, dtype=options.dtype or None,
      query_chunk=options.query_chunk or None)
  return restorer, config


def _run_files(restorer: inference.PhotoRestorer, picker: Optional['ReferencePicker'],
               pairs: list, options: Options, out, say) -> tuple[int, list[Result]]:
  """Restores each (src, dst) pair; the exit code and results of `run`."""
  results = []
  start = time.perf_counter()
  bar = tqdm.tqdm(pairs, unit='photo', desc='restore', disable=len(pairs) == 1, file=out)
  for src, dst in bar:
    try:
      results.append(restore_file(restorer, picker, src, dst, options, say))
    except Exception as e:  # pylint: disable=broad-except
      reason = str(e).replace('\n', ' ') or type(e).__name__
      if isinstance(e, image_io.ImageReadError) and reason.startswith(src):
        reason = reason[len(src):].lstrip(': ')
      results.append(Result(src, error=f'{type(e).__name__}: {reason}'))
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
  options = Options(**{field.name: f[field.name] for field in dataclasses.fields(Options)})
  code, _ = run(options)
  sys.exit(code)


if __name__ == '__main__':
  _FLAGS.update(define_flags())
  app.run(main)
