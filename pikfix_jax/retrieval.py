"""Reference retrieval (paper section 3.5): rank colour photos by DISTS-style similarity.

Both the query and the corpus are compared on their LUMINANCE (CIE L, shown to VGG-19 as the
sRGB grey of the same lightness), so colour never biases the ranking and a grey old photo can
query a colour corpus. Each image is resized to `image_size` squared; VGG-19 relu1_2, relu2_2,
relu3_4, relu4_4, relu5_4 (the ends of the five blocks, as DISTS uses for VGG-16) plus the
luminance itself are average-pooled to a `grid` x `grid` layout, and the index stores per image
the channel means (texture) and the centred cells (variances and covariances: structure); see
`pikfix_jax/ops/dists.py` and docs/WEIGHTS.md for the weights and the decisions.

Index file: one .npz (paths, skipped, mean (N, C) float32, centered (N, P, C) float16,
neighbors (N, k) int32, meta JSON). Building writes one part file per batch into
`<output>.parts/`; a rerun reuses them (and a finished index with the same settings), so an
interrupted build resumes with only the remaining images.
"""

import concurrent.futures
import functools
import json
import os
import shutil
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import tqdm

from pikfix_jax import image_io
from pikfix_jax import weights
from pikfix_jax.models import backbones
from pikfix_jax.ops import color
from pikfix_jax.ops import dists

LAYERS = ('relu1_2', 'relu2_2', 'relu3_4', 'relu4_4', 'relu5_4')
CHANNELS = (1, 64, 128, 256, 512, 512)  # The luminance, then LAYERS.
TEXTURE_WEIGHT = 0.5  # Texture (means) vs structure ((co)variances); DISTS's learnt weights
# exist only for VGG-16 and full-resolution aligned pairs, so: equal halves, equal layers.
DEFAULT_IMAGE_SIZE = 224
DEFAULT_GRID = 2
_STRIDE = 16  # relu5_4 is at 1/16 resolution.
_VERSION = 1
_VGG_SEED = 0  # Seed of the random VGG-19 used when no weights are given.
_QUERY_CHUNK = 32  # Queries per call when computing all neighbours.

ImageLike = Union[np.ndarray, str, os.PathLike]


def prepare(image: np.ndarray, image_size: int) -> np.ndarray:
  """sRGB (H, W, 3) in [0, 1], or luminance L/100 (H, W) / (H, W, 1) -> (S, S, C) float32.

  Resized (not cropped) with PIL's antialiased bilinear filter, channel by channel.
  """
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected an (H, W, 3) RGB or (H, W[, 1]) luminance image, got {image.shape}')
  size = (image_size, image_size)
  return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
      size, Image.Resampling.BILINEAR)) for c in range(image.shape[-1])], axis=-1)


@functools.partial(jax.jit, static_argnames='grid')
def _pooled_features(vgg_variables: Mapping[str, Any], images: jnp.ndarray,
                     grid: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Prepared images (B, S, S, 1|3) -> (mean (B, C), centred cells (P, B, C))."""
  lum = images if images.shape[-1] == 1 else color.rgb_to_lab_normalized(images)[0]
  feats = backbones.VGG(depth=19, outputs=LAYERS).apply(vgg_variables, color.gray_to_rgb(lum))
  pooled = jnp.concatenate([dists.grid_pool(lum, grid)] +
                           [dists.grid_pool(feats[name], grid) for name in LAYERS], axis=-1)
  stats = dists.summarize(pooled)
  return stats.mean, stats.centered


def image_stats(vgg_variables: Mapping[str, Any], images: np.ndarray,
                grid: int = DEFAULT_GRID) -> dists.Stats:
  """DISTS statistics of a batch of prepared images (B, S, S, 1|3) (see `prepare`)."""
  size = images.shape[1]
  if images.shape[2] != size or size % (_STRIDE * grid):
    raise ValueError(f'image_size must be square and a multiple of {_STRIDE * grid}, got '
                     f'{images.shape[1:3]}')
  mean, centered = _pooled_features(vgg_variables, jnp.asarray(images, jnp.float32),
                                    grid=grid)
  return dists.with_variance(mean, centered)


@jax.jit
def _similarity(query: dists.Stats, db: dists.Stats, alpha: jnp.ndarray,
                beta: jnp.ndarray) -> jnp.ndarray:
  return dists.similarity(query, db, alpha, beta)


class ReferenceIndex:
  """A corpus of colour photos summarised for retrieval; arrays load on first use."""

  def __init__(self, paths: Sequence[str], meta: Mapping[str, Any], *,
               mean: Optional[np.ndarray] = None, centered: Optional[np.ndarray] = None,
               neighbors: Optional[np.ndarray] = None, file: Optional[str] = None,
               vgg_variables: Optional[Mapping[str, Any]] = None):
    """`centered` is (N, P, C); arrays not given are read lazily from `file`."""
    self.paths = list(paths)
    self.meta = dict(meta)
    self._arrays = {'mean': mean, 'centered': centered, 'neighbors': neighbors}
    self._file = file
    self._read = set()  # Names already looked up in `file`.
    self._vgg = vgg_variables
    self._vgg_checked = False
    self._stats = None
    self._weights = dists.channel_weights(self.meta['channels'], self.meta['texture_weight'])

  @classmethod
  def load(cls, path: str, vgg_variables: Optional[Mapping[str, Any]] = None) -> 'ReferenceIndex':
    """Opens an index file. `vgg_variables` (the VGG-19 it was built with) is only needed to
    query with new images; None means the seeded random VGG-19 when it was built without."""
    with np.load(path) as f:
      meta = json.loads(str(f['meta']))
      paths = [str(p) for p in f['paths']]
    if meta.get('version') != _VERSION:
      raise ValueError(f'{path}: index version {meta.get("version")}, expected {_VERSION}')
    return cls(paths, meta, file=path, vgg_variables=vgg_variables)

  def __len__(self) -> int:
    return len(self.paths)

  def _array(self, name: str) -> Optional[np.ndarray]:
    if self._arrays[name] is None and self._file is not None and name not in self._read:
      self._read.add(name)
      with np.load(self._file) as f:
        self._arrays[name] = f[name] if name in f.files else None
    return self._arrays[name]

  @property
  def stats(self) -> dists.Stats:
    """Corpus statistics on the device, float32, centred cells (P, N, C)."""
    if self._stats is None:
      centered = np.moveaxis(self._array('centered'), 1, 0).astype(np.float32)
      self._stats = dists.with_variance(self._array('mean'), centered)
    return self._stats

  def _vgg_variables(self) -> Mapping[str, Any]:
    if self._vgg is None:
      if self.meta['pretrained']:
        raise ValueError('This index was built with pretrained VGG-19 weights; pass them: '
                         'ReferenceIndex.load(path, vgg_variables=...)')
      # The seeded random VGG-19 may differ in the last bit across JAX versions/platforms:
      # not checked against the fingerprint.
      self._vgg = weights.random_variables('vgg19', seed=self.meta['vgg_seed'])
      self._vgg_checked = True
    if not self._vgg_checked:
      if weights.fingerprint(self._vgg) != self.meta['vgg_fingerprint']:
        raise ValueError('vgg_variables differ from the VGG-19 this index was built with '
                         f'(fingerprint {self.meta["vgg_fingerprint"]})')
      self._vgg_checked = True
    return self._vgg

  def scores(self, image: ImageLike) -> np.ndarray:
    """Similarity (N,) of an image (file, sRGB (H, W, 3) or L/100 (H, W[, 1])) to the corpus."""
    if isinstance(image, (str, os.PathLike)):
      image = image_io.read_image(image)
    prepared = prepare(image, self.meta['image_size'])[None]
    return self.scores_of(image_stats(self._vgg_variables(), prepared, self.meta['grid']))[0]

  def scores_of(self, query: dists.Stats) -> np.ndarray:
    """Similarities (Q, N) of precomputed query statistics (`image_stats`) to the corpus."""
    return np.asarray(_similarity(query, self.stats, *self._weights))

  def query(self, image: ImageLike, top_k: int = 10) -> list[tuple[str, float]]:
    """The `top_k` most similar corpus images, best first: [(path, score), ...]."""
    scores = self.scores(image)
    order = np.argsort(-scores, kind='stable')[:top_k]
    return [(self.paths[i], float(scores[i])) for i in order]

  def neighbors(self, top_k: int = 10, exclude_self: bool = True) -> np.ndarray:
    """(N, top_k) int32 corpus indices of each image's most similar images, best first."""
    stored = self._array('neighbors')
    if exclude_self and stored is not None and stored.shape[1] >= top_k:
      return stored[:, :top_k]
    return _all_neighbors(self.stats, self._weights, top_k, exclude_self)


def _all_neighbors(stats: dists.Stats, channel_weights: tuple[np.ndarray, np.ndarray],
                   top_k: int, exclude_self: bool) -> np.ndarray:
  n = stats.mean.shape[0]
  top_k = min(top_k, n - 1 if exclude_self else n)
  out = np.zeros((n, top_k), np.int32)
  for start in tqdm.trange(0, n, _QUERY_CHUNK, desc='neighbours', disable=n <= _QUERY_CHUNK):
    rows = np.minimum(np.arange(start, start + _QUERY_CHUNK), n - 1)  # fixed shape: one compile
    query = dists.Stats(stats.mean[rows], stats.centered[:, rows], stats.var[rows])
    scores = np.array(_similarity(query, stats, *channel_weights))
    if exclude_self:
      scores[np.arange(len(rows)), rows] = -np.inf
    order = np.argsort(-scores, axis=1, kind='stable')[:, :top_k]
    out[start:start + _QUERY_CHUNK] = order[:min(_QUERY_CHUNK, n - start)]
  return out


def index_meta(image_size: int, grid: int, vgg_fingerprint: str, pretrained: bool) -> dict:
  """The settings an index records (and a resumed build must match)."""
  return {'version': _VERSION, 'image_size': image_size, 'grid': grid, 'layers': LAYERS,
          'channels': CHANNELS, 'texture_weight': TEXTURE_WEIGHT, 'vgg_seed': _VGG_SEED,
          'vgg_fingerprint': vgg_fingerprint, 'pretrained': pretrained}


def build_index(image_paths: Iterable[str], output_path: str, *,
                vgg_variables: Optional[Mapping[str, Any]] = None, batch_size: int = 16,
                image_size: int = DEFAULT_IMAGE_SIZE, grid: int = DEFAULT_GRID,
                neighbors_k: int = 10, num_threads: int = 4) -> ReferenceIndex:
  """Summarises `image_paths` (in this order) into an index file at `output_path`.

  vgg_variables: VGG-19 variables (`weights.maybe_load_backbone`); None = seeded random init
  (with a warning). Unreadable images are skipped with a warning naming them. Results do not
  depend on interruptions (every batch is padded to one shape; rows are kept in input order);
  another `batch_size` may change the last float bit. `neighbors_k` > 0 also stores every
  image's nearest neighbours (never itself).
  """
  paths = [os.fspath(p) for p in image_paths]
  if len(set(paths)) != len(paths):
    raise ValueError('image_paths contains duplicates')
  if image_size % (_STRIDE * grid):
    raise ValueError(f'image_size must be a multiple of {_STRIDE * grid} (grid {grid})')
  pretrained = vgg_variables is not None
  if not pretrained:
    vgg_variables = weights.maybe_load_backbone('', 'vgg19',
                                                weights.random_variables('vgg19', _VGG_SEED))
  meta = index_meta(image_size, grid, weights.fingerprint(vgg_variables), pretrained)
  parts_dir = output_path + '.parts'
  done, skipped = _cached_rows(output_path, parts_dir, meta)
  todo = [p for p in paths if p not in done and p not in skipped]
  if todo:
    os.makedirs(parts_dir, exist_ok=True)
    _write_json(os.path.join(parts_dir, 'meta.json'), _settings(meta))
    _embed_paths(todo, parts_dir, vgg_variables, batch_size, image_size, grid, num_threads,
                 done, skipped, progress_initial=len(paths) - len(todo))
  kept = [p for p in paths if p in done]
  if not todo and _is_complete(output_path, kept, meta, neighbors_k):
    return ReferenceIndex.load(output_path, vgg_variables if pretrained else None)
  mean = np.stack([done[p][0] for p in kept]) if kept else np.zeros((0, sum(CHANNELS)))
  centered = (np.stack([done[p][1] for p in kept]) if kept
              else np.zeros((0, grid * grid, sum(CHANNELS)), np.float16))
  arrays = {'paths': np.array(kept, dtype=str), 'mean': mean.astype(np.float32),
            'skipped': np.array([p for p in paths if p in skipped], dtype=str),
            'centered': centered, 'meta': np.array(json.dumps(meta))}
  if neighbors_k and kept:
    arrays['neighbors'] = ReferenceIndex(kept, meta, mean=mean, centered=centered).neighbors(
        neighbors_k, exclude_self=True)
  _save_npz(output_path, **arrays)
  shutil.rmtree(parts_dir, ignore_errors=True)
  logging.info('Reference index: %d images (%d skipped) -> %s', len(kept),
               len(paths) - len(kept), output_path)
  return ReferenceIndex.load(output_path, vgg_variables if pretrained else None)


def _embed_paths(todo: list[str], parts_dir: str, vgg_variables: Mapping[str, Any],
                 batch_size: int, image_size: int, grid: int, num_threads: int,
                 done: dict, skipped: set, progress_initial: int) -> None:
  """Reads, embeds and saves `todo` batch by batch (one part file per batch)."""
  def load(path):
    try:
      return prepare(image_io.read_image(path), image_size)
    except (image_io.ImageReadError, OSError) as e:
      logging.warning('Skipping unreadable image %s: %s', path, e)
      return None

  batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
  bar = tqdm.tqdm(total=progress_initial + len(todo), initial=progress_initial, unit='img',
                  desc='reference index')
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    pending = [pool.submit(load, p) for p in batches[0]] if batches else []
    for b, batch in enumerate(batches):
      images = [f.result() for f in pending]
      if b + 1 < len(batches):  # Decode the next batch while this one runs.
        pending = [pool.submit(load, p) for p in batches[b + 1]]
      ok = [i for i, im in enumerate(images) if im is not None]
      array = np.zeros((batch_size, image_size, image_size, 3), np.float32)
      for row, i in enumerate(ok):
        array[row] = images[i]
      stats = image_stats(vgg_variables, array, grid)
      mean = np.asarray(stats.mean)[:len(ok)]
      centered = np.moveaxis(np.asarray(stats.centered), 0, 1)[:len(ok)].astype(np.float16)
      bad = [p for i, p in enumerate(batch) if images[i] is None]
      _save_npz(os.path.join(parts_dir, f'part_{progress_initial + b * batch_size:08d}.npz'),
                paths=np.array([batch[i] for i in ok], dtype=str),
                skipped=np.array(bad, dtype=str), mean=mean, centered=centered)
      for row, i in enumerate(ok):
        done[batch[i]] = (mean[row], centered[row])
      skipped.update(bad)
      bar.update(len(batch))
  bar.close()


def _cached_rows(output_path: str, parts_dir: str, meta: Mapping[str, Any]
                 ) -> tuple[dict, set]:
  """Rows already computed with the same settings: a finished index and/or part files."""
  done, skipped = {}, set()
  files = []
  if os.path.exists(output_path):
    files.append(output_path)
  if os.path.isdir(parts_dir):
    try:
      with open(os.path.join(parts_dir, 'meta.json')) as f:
        same = json.load(f) == _settings(meta)
    except (OSError, ValueError):
      same = False
    if same:
      files += sorted(os.path.join(parts_dir, n) for n in os.listdir(parts_dir)
                      if n.startswith('part_') and n.endswith('.npz'))
    else:
      logging.warning('Discarding %s: built with other settings or weights.', parts_dir)
      shutil.rmtree(parts_dir)
  for file in files:
    with np.load(file) as f:
      if 'meta' in f.files and _settings(json.loads(str(f['meta']))) != _settings(meta):
        continue  # An old index with other settings: rebuilt from scratch.
      for p, m, c in zip(f['paths'], f['mean'], f['centered']):
        done[str(p)] = (m, c)
      skipped.update(str(p) for p in f['skipped'])
  return done, skipped


def _is_complete(output_path: str, kept: list[str], meta: Mapping[str, Any],
                 neighbors_k: int) -> bool:
  """Whether `output_path` already is this index (same rows, settings and neighbour table)."""
  if not os.path.exists(output_path):
    return False
  index = ReferenceIndex.load(output_path)
  stored = index._array('neighbors')  # pylint: disable=protected-access
  return (index.paths == kept and _settings(index.meta) == _settings(meta) and
          (not neighbors_k or (stored is not None and stored.shape[1] >= min(
              neighbors_k, len(kept) - 1))))


def _settings(meta: Mapping[str, Any]) -> dict:
  """The part of the metadata that must match for cached rows to be reused."""
  keys = ('version', 'image_size', 'grid', 'layers', 'vgg_fingerprint')
  return {k: list(meta[k]) if isinstance(meta[k], (tuple, list)) else meta[k] for k in keys}


def _save_npz(path: str, **arrays) -> None:
  """np.savez, atomically (a crash never leaves a truncated file under `path`)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _write_json(path: str, obj: Any) -> None:
  with open(path, 'w') as f:
    json.dump(obj, f)
