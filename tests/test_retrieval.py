"""Reference retrieval: ranking, determinism, resumable builds, corrupt files, weights."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage import data as skdata
import torch

from pikfix_jax import image_io
from pikfix_jax import retrieval
from pikfix_jax import weights
from pikfix_jax.ops import color
import torch_reference as ref

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SIZE = 64  # image_size of the test indexes (a multiple of 16 * grid).
_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'coins', 'moon',
           'hubble_deep_field', 'immunohistochemistry', 'stereo_motorcycle')


def _corpus() -> dict[str, np.ndarray]:
  """20 distinct photos: the left and right halves of 10 skimage photos (no overlap)."""
  out = {}
  for name in _PHOTOS:
    image = getattr(skdata, name)()
    image = image[0] if isinstance(image, tuple) else image
    image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    half = image.shape[1] // 2
    out[f'{name}_left'], out[f'{name}_right'] = image[:, :half], image[:, half:]
  return out


def _crop_and_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A 1-6 % crop from each side, then brightness, contrast, saturation and channel jitter."""
  h, w, _ = image.shape
  top, left, bottom, right = (rng.uniform(0.01, 0.06, 4) * [h, w, h, w]).astype(int)
  x = image[top:h - bottom, left:w - right]
  x = x * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
  grey = x.mean(-1, keepdims=True)
  x = grey + (x - grey) * rng.uniform(0.6, 1.4)
  return np.clip(x[..., rng.permutation(3)], 0, 1).astype(np.float32)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  directory = tmp_path_factory.mktemp('corpus')
  images = _corpus()
  paths = []
  for name, image in images.items():
    paths.append(str(directory / f'{name}.png'))
    image_io.write_image(paths[-1], image)
  return paths, list(images.values())


@pytest.fixture(scope='module')
def index_path(corpus, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('index') / 'index.npz')
  retrieval.build_index(corpus[0], path, batch_size=8, image_size=_SIZE)
  return path


def test_jittered_crop_ranks_its_source_first(corpus, index_path):
  # Random-init VGG-19 (seed 0: the only weights offline); margins are > 0.1 on a [-1, 1]
  # scale, so this does not depend on the seed's luck.
  paths, images = corpus
  index = retrieval.ReferenceIndex.load(index_path)
  assert index.paths == paths
  rng = np.random.default_rng(0)
  for i, image in enumerate(images):
    results = index.query(_crop_and_jitter(image, rng), top_k=3)
    assert results[0][0] == paths[i], (paths[i], results)
    assert results[0][1] > results[1][1]
  # A grey query (L/100, one channel) and a file path work too.
  lum = color.rgb_to_lab_normalized(images[3])[0]
  assert index.query(np.asarray(lum), top_k=1)[0][0] == paths[3]
  assert index.query(paths[5], top_k=1)[0] == (paths[5], pytest.approx(1.0, abs=1e-3))


def test_neighbors_exclude_self_and_match_scores(index_path):
  index = retrieval.ReferenceIndex.load(index_path)
  stored = index.neighbors(10)
  assert stored.shape == (20, 10)
  assert not np.any(stored == np.arange(20)[:, None])
  with_self = index.neighbors(11, exclude_self=False)  # recomputed: more than stored
  np.testing.assert_array_equal(with_self[:, 0], np.arange(20))  # each image is its own best
  np.testing.assert_array_equal(with_self[:, 1:], stored)


@pytest.mark.slow
def test_build_is_deterministic_and_resumes(corpus, index_path, tmp_path, monkeypatch):
  paths = corpus[0]
  real_read, real_stats = image_io.read_image, retrieval.image_stats
  batches = []

  def interrupted_stats(*args):  # Ctrl-C (in the main thread) while the third batch embeds
    batches.append(None)
    if len(batches) == 3:
      raise KeyboardInterrupt
    return real_stats(*args)

  out = str(tmp_path / 'resumed.npz')
  monkeypatch.setattr(retrieval, 'image_stats', interrupted_stats)
  with pytest.raises(KeyboardInterrupt):
    retrieval.build_index(paths, out, batch_size=4, image_size=_SIZE)
  assert not os.path.exists(out) and os.path.isdir(out + '.parts')
  monkeypatch.setattr(retrieval, 'image_stats', real_stats)
  calls = []
  monkeypatch.setattr(image_io, 'read_image', lambda p: calls.append(p) or real_read(p))
  retrieval.build_index(paths, out, batch_size=4, image_size=_SIZE)
  assert len(calls) == 12 and not set(calls) & set(paths[:8])  # two batches were saved
  assert not os.path.exists(out + '.parts')
  # Bit for bit the uninterrupted build; another batch size changes only rounding.
  fresh = str(tmp_path / 'fresh.npz')
  retrieval.build_index(paths, fresh, batch_size=4, image_size=_SIZE)
  with np.load(out) as resumed, np.load(fresh) as uninterrupted, np.load(index_path) as bs8:
    assert sorted(resumed.files) == sorted(uninterrupted.files)
    for key in uninterrupted.files:
      np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)
    np.testing.assert_allclose(resumed['mean'], bs8['mean'], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(resumed['neighbors'], bs8['neighbors'])
  # A rerun of a finished build reads nothing.
  calls.clear()
  retrieval.build_index(paths, out, batch_size=4, image_size=_SIZE)
  assert not calls


def test_corrupt_image_is_skipped_with_warning(corpus, tmp_path, caplog):
  bad = str(tmp_path / 'broken.jpg')
  with open(bad, 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 definitely not a jpeg')
  paths = corpus[0][:3] + [bad]
  with caplog.at_level(logging.WARNING):
    index = retrieval.build_index(paths, str(tmp_path / 'i.npz'), batch_size=4,
                                  image_size=_SIZE, neighbors_k=2)
  assert index.paths == corpus[0][:3]
  assert any(bad in r.getMessage() for r in caplog.records)
  assert index.neighbors(2).shape == (3, 2)


def test_converted_vgg19_changes_features_and_is_required_to_query(corpus, tmp_path):
  torch_vgg = ref.randomize(ref.VGG(19), seed=7)
  pth = str(tmp_path / 'vgg19.pth')
  torch.save(torch_vgg.state_dict(), pth)
  msgpack = str(tmp_path / 'vgg19.msgpack')
  weights.save_variables(msgpack, weights.convert_files('vgg19', pth))
  random_init = weights.random_variables('vgg19')
  converted = weights.maybe_load_backbone(msgpack, 'vgg19', random_init)
  image = retrieval.prepare(corpus[1][0], _SIZE)[None]
  a = retrieval.image_stats(random_init, image)
  b = retrieval.image_stats(converted, image)
  channels = retrieval.CHANNELS[0]  # the luminance itself does not depend on the weights
  np.testing.assert_allclose(a.mean[:, :channels], b.mean[:, :channels], rtol=1e-6)
  assert np.abs(np.asarray(a.mean[:, channels:] - b.mean[:, channels:])).max() > 1e-2

  path = str(tmp_path / 'pretrained.npz')
  retrieval.build_index(corpus[0][:4], path, vgg_variables=converted, batch_size=4,
                        image_size=_SIZE, neighbors_k=0)
  with pytest.raises(ValueError, match='pretrained'):
    retrieval.ReferenceIndex.load(path).query(corpus[1][0])
  with pytest.raises(ValueError, match='differ'):
    retrieval.ReferenceIndex.load(path, vgg_variables=random_init).query(corpus[1][0])
  top = retrieval.ReferenceIndex.load(path, vgg_variables=converted).query(corpus[1][2], 1)
  assert top[0][0] == corpus[0][2]


@pytest.mark.slow
def test_build_reference_index_cli(corpus, tmp_path):
  images = tmp_path / 'photos'
  (images / 'sub').mkdir(parents=True)
  for i, path in enumerate(corpus[0][:3]):
    target = images / ('sub' if i else '') / os.path.basename(path)
    target.write_bytes(open(path, 'rb').read())
  (images / 'notes.txt').write_text('not an image')
  out = str(tmp_path / 'cli.npz')
  subprocess.run([sys.executable, '-m', 'data_prep.build_reference_index',
                  f'--images={images}', f'--output={out}', f'--image_size={_SIZE}',
                  '--batch_size=2', '--neighbors_k=1'], cwd=_ROOT, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  index = retrieval.ReferenceIndex.load(out)
  names = [os.path.relpath(p, images) for p in index.paths]
  assert names == [os.path.basename(corpus[0][0]), 'sub/' + os.path.basename(corpus[0][1]),
                   'sub/' + os.path.basename(corpus[0][2])]
  assert index.neighbors(1).shape == (3, 1)
