"""The restore command: sizes, tiling, odd files, folders, references, export round trip."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.data

from pikfix_jax import artifacts
from pikfix_jax import export
from pikfix_jax import image_io
from pikfix_jax import inference
from pikfix_jax import loading
from pikfix_jax import restore
from pikfix_jax import restoring
from pikfix_jax.models import layers
from pikfix_jax.models import pikfix

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def restorer(initial_workdir):
  model, variables, config = loading.load_generator(workdir=initial_workdir)
  assert tuple(config.model.restoration.levels) == (1, 4, 8)  # JSON lists back to tuples
  return inference.Restorer(model, variables, reference_size=64)


def _photo(h, w, grey=False):
  image = skimage.data.astronaut()[:h, :w]
  if grey:
    image = np.asarray(Image.fromarray(image).convert('L'))
  return image


def _reference(tmp_path):
  path = str(tmp_path / 'reference.png')
  Image.fromarray(skimage.data.coffee()[::4, ::4]).save(path)
  return path


def _options(tmp_path, **kw):
  kw.setdefault('reference', _reference(tmp_path))
  return restoring.Options(**kw)


@pytest.mark.slow  # compiles the tiny model at five shapes
def test_odd_sizes_come_back_at_input_size_and_tiling_is_exact(restorer):
  reference = skimage.data.coffee() / 255.0
  for h, w in ((37, 50), (300, 451)):
    out = restorer(_photo(h, w) / 255.0, reference)
    assert out.shape == (h, w, 3) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
  assert restorer.last_info['padded'] == (320, 480)
  assert restorer.last_info['reference'] == (32, 64)  # longer side 64, aspect ~2:3, x32

  # Windows overlapping by the receptive field reproduce the untiled restoration.
  padded, _ = layers.pad_to_multiple(
      jnp.asarray(_photo(300, 451)[None] / 255.0, jnp.float32), pikfix.MULTIPLE)
  l = restorer._to_l(padded)  # pylint: disable=protected-access
  whole = np.asarray(restorer.restore_luminance(l))
  tiled = inference.Restorer(restorer.model, restorer.variables, reference_size=64,
                           tile_size=2 * restorer.halo + 32)
  np.testing.assert_allclose(np.asarray(tiled.restore_luminance(l)), whole, atol=1e-5)
  assert tiled.last_info['windows'] > 1
  out_tiled = tiled(_photo(300, 451) / 255.0, reference)
  out_whole = restorer(_photo(300, 451) / 255.0, reference)
  assert np.abs(out_tiled - out_whole).max() < 2e-3  # < 1/2 of an 8-bit step

  # Above color_max_pixels the colour runs at a lower resolution; the size is unchanged.
  small = inference.Restorer(restorer.model, restorer.variables, reference_size=64,
                           color_max_pixels=160 * 224)
  out = small(_photo(300, 451) / 255.0, reference)
  assert out.shape == (300, 451, 3) and small.last_info['color'] == (128, 224)

  with pytest.raises(inference.InputTooSmallError, match='1x1 px.*8x8'):
    restorer(np.zeros((1, 1, 3), np.float32), reference)


def test_window_layout_covers_every_pixel_once():
  for size, window, halo in ((2048, 1152, 128), (4096, 1536, 128), (320, 160, 64), (64, 64, 64)):
    starts = inference.window_starts(size, window, halo)
    cores = inference._cores(starts, window, halo, size)  # pylint: disable=protected-access
    assert cores[0][0] == 0 and cores[-1][1] == size
    for (a0, a1), (b0, b1), s in zip(cores, cores[1:], starts):
      assert a1 == b0 and a0 < a1
    for s, (c0, c1) in zip(starts, cores):
      assert s % 32 == 0 and s + window <= max(size, window)
      assert c0 == 0 or c0 - s >= halo  # every core pixel has `halo` context inside its window
      assert c1 == size or s + window - c1 >= halo


def test_folder_with_bad_files_restores_the_rest(tmp_path, restorer, capsys):
  src, dst = tmp_path / 'in', tmp_path / 'out'
  os.makedirs(src / 'sub')
  Image.fromarray(_photo(37, 50)).save(src / 'colour.png')
  Image.fromarray(_photo(37, 50, grey=True)).save(src / 'sub' / 'grey.jpg', quality=90)
  rgba = np.concatenate([_photo(37, 50), np.full((37, 50, 1), 255, np.uint8)], axis=-1)
  rgba[:10, :10, 3] = 0
  Image.fromarray(rgba, 'RGBA').save(src / 'transparent.png')
  Image.fromarray((_photo(37, 50, grey=True).astype(np.uint16) * 257)).save(src / 'deep16.png')
  rotated = Image.fromarray(_photo(37, 50))
  exif = rotated.getexif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
  rotated.save(src / 'rotated.jpg', exif=exif, quality=95)
  (src / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not really a jpeg')
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(src / 'dot.png')
  (src / 'notes.txt').write_text('not an image, not counted')

  code, results = restore.run(_options(tmp_path, input=str(src), output=str(dst), compare=True),
                              restorer=restorer)
  err = capsys.readouterr().err
  assert code == 1
  failed = {os.path.basename(r.input): r.error for r in results if r.error}
  assert set(failed) == {'broken.jpg', 'dot.png'}
  assert 'ImageReadError' in failed['broken.jpg'] and '8x8' in failed['dot.png']
  assert 'restored 5 of 7 photos' in err and '2 failed' in err
  assert str(src / 'broken.jpg') in err and str(src / 'dot.png') in err

  for name in ('colour.png', 'sub/grey.jpg', 'transparent.png', 'deep16.png'):
    with Image.open(dst / name) as im:
      assert im.size == (50, 37), name
  with Image.open(dst / 'rotated.jpg') as im:
    assert im.size == (37, 50)  # EXIF orientation applied
  with Image.open(dst / 'transparent.png') as im:  # alpha kept
    assert im.mode == 'RGBA'
    np.testing.assert_array_equal(np.asarray(im)[..., 3], rgba[..., 3])
  with Image.open(dst / 'colour_compare.png') as im:
    assert im.size[1] == 37 and im.size[0] > 3 * 50  # input | reference | output
  assert not (dst / 'notes.png').exists()

  # The same transparent photo to JPEG: alpha dropped with a notice.
  code, _ = restore.run(_options(tmp_path, input=str(src / 'transparent.png'),
                                 output=str(tmp_path / 'flat.jpg')), restorer=restorer)
  assert code == 0 and 'transparency dropped' in capsys.readouterr().err
  assert image_io.read_image(tmp_path / 'flat.jpg').shape == (37, 50, 3)


@pytest.mark.slow
def test_reference_dir_uses_the_retrieval_top_match(tmp_path, restorer, capsys, monkeypatch):
  monkeypatch.setenv('PIKFIX_CACHE_DIR', str(tmp_path / 'cache'))
  corpus = tmp_path / 'corpus'
  os.makedirs(corpus)
  photo = skimage.data.astronaut()[::4, ::4]  # 128 x 128
  Image.fromarray(photo).save(corpus / 'astronaut_colour.png')
  for name in ('coffee', 'rocket', 'chelsea', 'hubble_deep_field'):
    Image.fromarray(getattr(skimage.data, name)()[::4, ::4]).save(corpus / f'{name}.png')
  query = tmp_path / 'old.png'
  Image.fromarray(photo).convert('L').save(query)

  options = restoring.Options(input=str(query), output=str(tmp_path / 'new.png'),
                            reference_dir=str(corpus), top_k=3, index_image_size=64)
  code, results = restore.run(options, restorer=restorer)
  err = capsys.readouterr().err
  assert code == 0, err
  assert os.path.basename(results[0].reference) == 'astronaut_colour.png'
  assert 'next best' in err  # the other candidates are reported
  cached = os.listdir(tmp_path / 'cache' / 'reference_index')
  assert len(cached) == 1 and cached[0].startswith('corpus-')
  # An explicit --index is built there and reused; the photo itself is never its reference.
  Image.fromarray(photo).save(corpus / 'old.png')
  options.input, options.index = str(corpus / 'old.png'), str(tmp_path / 'refs.npz')
  code, results = restore.run(options, restorer=restorer)
  assert code == 0 and os.path.exists(tmp_path / 'refs.npz')
  assert os.path.basename(results[0].reference) == 'astronaut_colour.png'


@pytest.mark.slow  # a command-line run (subprocess)
def test_no_reference_and_no_corpus_is_a_clear_error(tmp_path, initial_workdir):
  Image.fromarray(_photo(37, 50)).save(tmp_path / 'in.png')
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.restore', f'--workdir={initial_workdir}',
       f'--input={tmp_path / "in.png"}', f'--output={tmp_path / "out.png"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and '--reference' in lines[0] and '--reference_dir' in lines[0]
  assert not (tmp_path / 'out.png').exists()


@pytest.mark.slow
def test_export_then_restore_equals_restoring_from_workdir(tmp_path, initial_workdir, capsys):
  exported = str(tmp_path / 'model')
  record = export.export(initial_workdir, exported)
  assert record['step'] == 0 and record['bytes'] > 0
  assert sorted(os.listdir(exported)) == ['config.json', 'export.json', 'variables']
  with pytest.raises(artifacts.RestoreError, match='exists'):
    export.export(initial_workdir, exported)

  model, variables, config = loading.load_generator(checkpoint=exported)
  assert set(variables) == {'params', 'batch_stats'}  # no optimiser, no discriminator
  assert config.model.to_dict() == artifacts.read_config(
      os.path.join(initial_workdir, 'config.json')).model.to_dict()

  Image.fromarray(_photo(37, 50)).save(tmp_path / 'in.png')
  outs = {}
  sources = {'workdir': {'workdir': initial_workdir}, 'export': {'checkpoint': exported}}
  for name, source in sources.items():
    out = str(tmp_path / f'{name}.png')
    code, _ = restore.run(_options(tmp_path, input=str(tmp_path / 'in.png'), output=out,
                                   reference_size=64, **source))
    assert code == 0, capsys.readouterr().err
    outs[name] = np.asarray(Image.open(out))
  np.testing.assert_array_equal(outs['export'], outs['workdir'])

  with pytest.raises(artifacts.RestoreError, match='not an exported checkpoint'):
    loading.load_generator(checkpoint=str(tmp_path))


@pytest.mark.slow
def test_stablehlo_export_restores_without_the_model_code(tmp_path, initial_workdir, capsys,
                                                         monkeypatch):
  """export --format=stablehlo (the command) writes a jax.export artifact that restore runs
  with no model code, giving the orbax export's output (to 5e-5, about 1/80 of an 8-bit level)."""
  artifact, orbax = str(tmp_path / 'artifact'), str(tmp_path / 'orbax')
  result = subprocess.run(
      [sys.executable, '-m', 'pikfix_jax.export', f'--workdir={initial_workdir}',
       f'--output={artifact}', '--format=stablehlo', '--platforms=cpu,cuda'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(artifact)) == ['export.json', artifacts.EXPORT_ARTIFACT]
  with open(os.path.join(artifact, 'export.json')) as f:
    meta = json.load(f)
  assert meta['platforms'] == ['cpu', 'cuda'] and meta['multiple'] == 32
  assert meta['model'] == json.loads(artifacts.read_config(
      os.path.join(initial_workdir, 'config.json')).model.to_json_best_effort())
  export.export(initial_workdir, orbax)
  with pytest.raises(artifacts.RestoreError, match='stablehlo'):
    loading.load_generator(checkpoint=artifact)

  # At least 96 px after padding (photo and reference): no conv output is then smaller than
  # its kernel, where the orbax engine on CPU computes the conv as a matrix product
  # (ops/conv.conv_by_matmul) that a size-polymorphic artifact cannot choose by size: the
  # same values, summed in another order.
  image, reference = _photo(70, 100) / 255.0, skimage.data.coffee() / 255.0
  model, variables, _ = loading.load_generator(checkpoint=orbax)
  expected = inference.Restorer(model, variables, reference_size=128)(image, reference)
  Image.fromarray(_photo(70, 100)).save(tmp_path / 'in.png')
  outs = {}
  for name, path in (('orbax', orbax), ('artifact', artifact)):
    if name == 'artifact':  # from here on, building a model fails
      monkeypatch.setattr(pikfix, 'build_generator', None)
      exported = inference.ExportedRestorer(artifact, reference_size=128)
      np.testing.assert_allclose(exported(image, reference), expected, rtol=0, atol=5e-5)
      assert exported.last_info['padded'] == (96, 128)
    out = str(tmp_path / f'{name}.png')
    code, _ = restore.run(_options(tmp_path, input=str(tmp_path / 'in.png'), output=out,
                                   reference_size=128, checkpoint=path))
    assert code == 0, capsys.readouterr().err
    outs[name] = np.asarray(Image.open(out), np.int32)
  assert np.abs(outs['artifact'] - outs['orbax']).max() <= 1  # 8-bit rounding of 1e-5
