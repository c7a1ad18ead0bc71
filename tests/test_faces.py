"""Faces (pikfix_jax/faces.py, restore --faces): geometry and colour against scikit-image /
SciPy, both paste-backs against transcriptions of the releases (Wan et al.'s
align_warp_back_multiple_dlib.py, facexlib's FaceRestoreHelper) built from skimage's warp, the
release's own histogram loop and SciPy filters, dlib's detection on real photos, and the
restore command's flags, files and one-line errors."""

import os
import re
import sys
import tomllib

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage
import skimage.data
import skimage.exposure
import skimage.morphology
import skimage.transform

from pikfix_jax import faces
from pikfix_jax import image_io
from pikfix_jax import restore
from pikfix_jax import restoring
from pikfix_jax import weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASTRONAUT_FACE = (179, 83, 266, 170)  # dlib's box (left, top, right, bottom) on astronaut


def _similarity(src, dst) -> np.ndarray:
  """skimage's estimate (from_estimate since 0.26, estimate before)."""
  cls = skimage.transform.SimilarityTransform
  if hasattr(cls, 'from_estimate'):
    return cls.from_estimate(src, dst).params
  t = cls()
  assert t.estimate(src, dst)
  return t.params


@pytest.fixture(scope='module')
def astronaut() -> np.ndarray:
  return (skimage.data.astronaut() / 255.0).astype(np.float32)


# ----------------------------------------------------------------------- geometry, colour


def test_similarity_transform_matches_skimage():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 300, (5, 2))
  rot = np.array([[0.8, -0.3], [0.3, 0.8]])
  for dst in (src @ rot.T + [10, 20] + rng.normal(0, 3, (5, 2)),  # a noisy similarity
              src * [-1, 1] + rng.normal(0, 3, (5, 2))):  # a mirror: the best non-reflection
    np.testing.assert_allclose(faces.similarity_transform(src, dst), _similarity(src, dst),
                               atol=1e-9)
  # The release's own call: template -> landmarks (crop -> photo).
  lm = faces.release_points(rng.uniform(100, 200, (68, 2)))
  np.testing.assert_allclose(faces.similarity_transform(faces.release_template(256), lm),
                             _similarity(faces.release_template(256), lm), atol=1e-9)


def test_templates_are_the_releases():
  # detect_all_dlib.py: (pts / 256 - 1) in float32, then (std * 1.3 + 1) / 2 * 256.
  pts = np.array([196.0, 226.0, 316.0, 226.0, 256.0, 286.0, 220.0, 360.4, 292.0, 360.4],
                 np.float32) / 256.0 - 1.0
  want = (pts.reshape(5, 2) * 1.3 + 1) / 2 * 512.0
  np.testing.assert_allclose(faces.release_template(512), want, rtol=1e-6)
  # facexlib's 512 template, scaled with face_size.
  np.testing.assert_allclose(faces.ffhq_template(64)[0], [192.98138 / 8, 239.94708 / 8])
  lm = np.zeros((68, 2))
  lm[36:42], lm[42:48] = [[10, 5]], [[30, 5]]
  lm[36], lm[39], lm[30], lm[48], lm[54] = [9, 5], [12, 6], [20, 12], [14, 20], [26, 20]
  np.testing.assert_array_equal(faces.release_points(lm),
                                [[10, 5], [30, 5], [20, 12], [14, 20], [26, 20]])


@pytest.mark.parametrize('order', [0, 1, 3])
def test_warp_matches_skimage(astronaut, order):
  astronaut = astronaut.astype(np.float64)  # skimage computes float32 images in float32
  m = skimage.transform.SimilarityTransform(scale=0.7, rotation=0.3, translation=(150, 40)).params
  want = skimage.transform.warp(astronaut, m, output_shape=(96, 96), order=order,
                                preserve_range=True)
  np.testing.assert_allclose(faces.warp(astronaut, m, (96, 96), order=order), want, atol=1e-6)
  # A window of the warp back (the paste computes only around the face).
  inv = np.linalg.inv(m)
  crop = astronaut[:96, :96]
  want = skimage.transform.warp(crop, inv, output_shape=(200, 200), order=order,
                                preserve_range=True)
  np.testing.assert_allclose(faces.warp(crop, inv, (60, 80), order=order, origin=(100, 120)),
                             want[120:180, 100:180], atol=1e-6)
  ones = skimage.transform.warp(np.ones((512, 512)), m, output_shape=(96, 96), order=0)
  np.testing.assert_array_equal(faces.inside_mask((512, 512), m, (96, 96)), ones)


def test_warp_border_colour_per_channel(astronaut):
  astronaut = astronaut.astype(np.float64)
  m = np.array([[1.0, 0, -20.5], [0, 1.0, -10.25], [0, 0, 1]])
  got = faces.warp(astronaut, m, (40, 40), order=1, cval=faces.FFHQ_BORDER_RGB)
  for c in range(3):
    want = skimage.transform.warp(astronaut[..., c], m, output_shape=(40, 40), order=1,
                                  cval=faces.FFHQ_BORDER_RGB[c], preserve_range=True)
    np.testing.assert_allclose(got[..., c], want, atol=1e-6)


def _release_match_histograms(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """align_warp_back_multiple_dlib.py's calculate_cdf / calculate_lookup loops, per channel."""
  out = np.empty(src.shape)
  for c in range(src.shape[-1]):
    src_hist, _ = np.histogram(src[..., c].flatten(), 256, [0, 256])
    ref_hist, _ = np.histogram(ref[..., c].flatten(), 256, [0, 256])
    src_cdf = src_hist.cumsum() / float(src_hist.cumsum().max())
    ref_cdf = ref_hist.cumsum() / float(ref_hist.cumsum().max())
    lookup, value = np.zeros(256), 0
    for s in range(256):
      for r in range(256):
        if ref_cdf[r] >= src_cdf[s]:
          value = r
          break
      lookup[s] = value
    out[..., c] = lookup[src[..., c]]
  return out


def test_match_histograms_is_the_releases_and_near_skimages():
  a = skimage.data.astronaut()[100:228, 100:228]
  b = skimage.data.coffee()[:128, :128]
  for src, ref in ((a, b), (b, a), (a // 3 + 50, a)):
    got = np.rint(faces.match_histograms(src, ref) * 255)
    np.testing.assert_array_equal(got, _release_match_histograms(src, ref))
    # skimage interpolates between the reference's quantiles; the release takes the next value
    # that is present (further where the reference's histogram has gaps).
    sk = skimage.exposure.match_histograms(src, ref, channel_axis=-1)
    assert np.mean(np.abs(got - sk)) <= 1.0 and np.percentile(np.abs(got - sk), 99) <= 1.0
  # Floats are matched on their 8-bit values.
  np.testing.assert_array_equal(faces.match_histograms(a / 255.0, b / 255.0),
                                faces.match_histograms(a, b))


def test_erosion_and_blur_match_scipy_and_skimage():
  rng = np.random.default_rng(1)
  mask = (ndimage.uniform_filter(rng.uniform(size=(90, 70)), 9) > 0.5).astype(np.float64)
  # 3 x (9 x 9) erosions are one 25 x 25 erosion; pixels outside are ignored.
  square = np.ones((25, 25), bool)
  np.testing.assert_array_equal(faces.erode(mask, 9, 3),
                                skimage.morphology.erosion(mask, square))
  np.testing.assert_array_equal(faces.erode(mask, 4),
                                ndimage.grey_erosion(mask, size=(4, 4), mode='nearest'))
  # cv2's sigma for ksize 25 is 4.1; reflect-101 borders are SciPy's 'mirror'.
  np.testing.assert_allclose(faces.gaussian_blur(mask, 25),
                             ndimage.gaussian_filter(mask, 4.1, mode='mirror', truncate=12 / 4.1),
                             atol=1e-12)
  np.testing.assert_allclose(faces.gaussian_kernel(5), np.array([1, 4, 6, 4, 1]) / 16)


# ------------------------------------------------------------------------------ detection


def test_detection_finds_the_astronauts_face_and_no_face_in_coffee(astronaut):
  found = faces.detect_faces(astronaut)
  assert len(found) == 1
  box = np.array(found[0].box)
  assert np.abs(box - ASTRONAUT_FACE).max() <= 4
  lm = found[0].landmarks
  eyes, nose, mouth = faces.ffhq_points(lm)[:2], lm[30], lm[48]
  assert eyes[0][0] < nose[0] < eyes[1][0] and eyes[:, 1].max() < nose[1] < mouth[1]
  assert faces.detect_faces(skimage.data.coffee()) == []


# -------------------------------------------------------------------- release transcriptions


def _release_pipeline(photo: np.ndarray, lm68: np.ndarray, face_net, size: int) -> np.ndarray:
  """align_warp_back_multiple_dlib.py's loop body for one face, float [0, 1] instead of
  0..255, skimage calls as the release makes them, its histogram loop, and cv2's erode /
  GaussianBlur as SciPy filters (one change: the aligned crop is rounded to 8 bits, not
  truncated, before the histogram)."""
  pts = faces.release_points(lm68)
  affine = _similarity(faces.release_template(size), pts)
  aligned = skimage.transform.warp(photo, affine, output_shape=(size, size, 3),
                                   preserve_range=True)
  forward_mask = skimage.transform.warp(np.ones(photo.shape), affine,
                                        output_shape=(size, size, 3), order=0)
  restored = face_net(aligned.astype(np.float32)).astype(np.float64)
  a8 = np.rint(aligned * 255).astype(np.uint8)
  b8 = np.rint(np.clip(restored, 0, 1) * 255).astype(np.uint8)
  matched = _release_match_histograms(b8, a8) / 255.0
  inverse = np.linalg.inv(affine)
  back = skimage.transform.warp(matched, inverse, output_shape=photo.shape, order=3,
                                preserve_range=True)
  mask = skimage.transform.warp(forward_mask, inverse, output_shape=photo.shape, order=0)
  mask = ndimage.grey_erosion(mask[..., 0], size=(25, 25), mode='nearest')
  mask = ndimage.gaussian_filter(mask, 4.1, mode='mirror', truncate=12 / 4.1)[..., None]
  return np.clip(back * mask + (1 - mask) * photo, 0, 1)


def _facexlib_pipeline(photo, lm68, face_net, size):
  """FaceRestoreHelper's align_warp_face + paste_faces_to_input_image (upscale 1, no parsing)
  for one face with skimage warps and SciPy filters for cv2's."""
  to_crop = _similarity(faces.ffhq_points(lm68), faces.ffhq_template(size))
  to_photo = np.linalg.inv(to_crop)
  crop = np.stack([skimage.transform.warp(photo[..., c], to_photo, output_shape=(size, size),
                                          cval=faces.FFHQ_BORDER_RGB[c], preserve_range=True)
                   for c in range(3)], -1)
  restored = np.clip(face_net(crop.astype(np.float32)).astype(np.float64), 0, 1)
  inv_restored = skimage.transform.warp(restored, to_crop, output_shape=photo.shape[:2])
  inv_mask = skimage.transform.warp(np.ones((size, size)), to_crop, output_shape=photo.shape[:2])
  inv_mask = ndimage.grey_erosion(inv_mask, size=(2, 2), mode='nearest')
  w_edge = int(np.sum(inv_mask) ** 0.5) // 20
  center = ndimage.grey_erosion(inv_mask, size=(2 * w_edge,) * 2, mode='nearest')
  sigma = 0.3 * (w_edge - 1) + 0.8
  soft = ndimage.gaussian_filter(center, sigma, mode='mirror', truncate=w_edge / sigma)[..., None]
  return soft * inv_mask[..., None] * inv_restored + (1 - soft) * photo


def _face_net(face: np.ndarray) -> np.ndarray:
  """A stand-in face network: a colour change that depends on the position."""
  ramp = np.linspace(0.0, 0.3, face.shape[0])[:, None, None]
  return np.clip(face[..., ::-1] * 0.8 + ramp, 0, 1).astype(np.float32)


@pytest.mark.parametrize('kind, size', [('wan', 256), ('gfpgan', 128)])
def test_pipelines_match_the_release_transcriptions(astronaut, kind, size):
  enhancer = faces.FaceEnhancer(kind, face_net=_face_net, face_size=size)
  out = enhancer(astronaut)
  assert out.dtype == np.float32 and len(enhancer.last_faces) == 1
  lm = enhancer.last_faces[0].face.landmarks
  pipeline = _release_pipeline if kind == 'wan' else _facexlib_pipeline
  want = pipeline(astronaut.astype(np.float64), lm, _face_net, size)
  np.testing.assert_allclose(out, want, atol=2e-6)
  changed = np.nonzero(np.any(out != astronaut, axis=-1))
  left, top, right, bottom = ASTRONAUT_FACE
  assert changed[1].min() < left and changed[1].max() > right  # the blend covers the face
  assert changed[0].min() < top and changed[0].max() > bottom
  assert out[300:].tobytes() == astronaut[300:].tobytes()  # far below: bitwise the input


def test_no_face_passes_through_unchanged():
  coffee = (skimage.data.coffee() / 255.0).astype(np.float32)
  calls = []
  enhancer = faces.FaceEnhancer('gfpgan', face_net=lambda f: calls.append(f) or f, face_size=64)
  assert enhancer(coffee) is coffee and not calls and enhancer.last_faces == []


# ------------------------------------------------------------------------- restore --faces


class IdentityRestorer:
  """A method's restorer that returns the photo: restore --faces on its own."""
  uses_reference = False

  def __init__(self):
    self.last_info = {}

  def __call__(self, image, reference):
    del reference
    return image


def _run(tmp_path, **kw):
  log = tmp_path / 'log.txt'
  with open(log, 'w') as out:
    code, results = restore.run(restoring.Options(**kw), restorer=IdentityRestorer(), out=out)
  return code, results, log.read_text()


def _write(path, image):
  Image.fromarray(image).save(path)
  return str(path)


def test_restore_faces_usage_errors_are_one_line(tmp_path, monkeypatch):
  src = _write(tmp_path / 'a.png', skimage.data.coffee()[:64, :64])
  dst = str(tmp_path / 'out.png')
  bad = str(tmp_path / 'bad.msgpack')
  weights.save_variables(bad, {'params': {'conv': {'kernel': np.zeros((1, 1, 3, 8))}}})
  junk = tmp_path / 'junk.msgpack'
  junk.write_bytes(b'not msgpack at all')
  pth = tmp_path / 'GFPGANv1.4.pth'
  pth.write_bytes(b'')
  cases = [
      (dict(save_faces=True), '--face_checkpoint and --save_faces need --faces'),
      (dict(faces='gfpgan'), '--faces=gfpgan needs --face_checkpoint=PATH'),
      (dict(faces='gfpgan', face_checkpoint=str(tmp_path / 'none.msgpack')), 'no such file'),
      (dict(faces='gfpgan', face_checkpoint=bad), 'not a converted GFP-GAN'),
      (dict(faces='gfpgan', face_checkpoint=str(junk)), 'unreadable'),
      (dict(faces='gfpgan', face_checkpoint=str(pth)), 'convert it first'),
      (dict(faces='other'), '--faces=other: use one of wan, gfpgan'),
  ]
  cases.append((dict(faces='wan', face_checkpoint=bad),
                'not a converted Wan et al. face generator: no bad.json beside it'))
  for kw, message in cases:
    code, results, log = _run(tmp_path, input=src, output=dst, **kw)
    assert code == 2 and not results and not os.path.exists(dst), kw
    assert log.startswith('error: ') and log.count('\n') == 1 and message in log, (kw, log)


def test_faces_without_the_extra_is_one_line(tmp_path, monkeypatch):
  src = _write(tmp_path / 'a.png', skimage.data.coffee()[:64, :64])
  faces._dlib_models.cache_clear()  # pylint: disable=protected-access
  monkeypatch.setitem(sys.modules, 'dlib', None)  # `import dlib` raises ImportError
  try:
    code, _, log = _run(tmp_path, input=src, output=str(tmp_path / 'o.png'), faces='gfpgan',
                        face_checkpoint='x.msgpack')
  finally:
    faces._dlib_models.cache_clear()  # pylint: disable=protected-access
  assert code == 2 and log.count('\n') == 1
  assert log.startswith('error: --faces needs dlib') and 'pip install -e .[faces]' in log
  monkeypatch.setattr(faces.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(faces.FaceError, match=re.escape('face-recognition-models package: pip '
                                                      'install -e .[faces]')):
    faces.landmark_model_path()


def test_the_extra_is_what_the_test_requirements_install():
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    extra = tomllib.load(f)['project']['optional-dependencies']['faces']
  with open(os.path.join(REPO, 'requirements-dev.txt')) as f:
    dev = [line.strip() for line in f if line.strip() and not line.startswith(('#', '-'))]
  assert set(extra) <= set(dev)


@pytest.fixture(scope='module')
def tiny_gfpgan(tmp_path_factory) -> str:
  """A fake GFPGANv1.4.pth (random weights, 64 px faces) converted as the CLI does."""
  import gfpgan_reference as ref  # pylint: disable=g-import-not-at-top  (imports torch)
  path = tmp_path_factory.mktemp('gfpgan')
  model = ref.randomize(ref.GFPGANv1Clean(out_size=64, num_style_feat=32, channel_multiplier=1,
                                          narrow=0.25), 0)
  ref.write_release_file(str(path / 'GFPGANv1.4.pth'), model)
  out = str(path / 'gfpgan64.msgpack')
  weights.save_variables(out, weights.convert_files('gfpgan', str(path / 'GFPGANv1.4.pth')))
  return out


@pytest.mark.slow
def test_restore_faces_gfpgan_folder(tmp_path, tiny_gfpgan):
  """restore --faces=gfpgan over a folder (a face, no face): the face is restored by the
  converted network and blended back; the rest of the photo, and the photo without a face, are
  written bitwise as the method restored them; --save_faces writes the aligned crops."""
  photos = tmp_path / 'in'
  photos.mkdir()
  _write(photos / 'astronaut.png', skimage.data.astronaut())
  _write(photos / 'coffee.png', skimage.data.coffee())
  out = tmp_path / 'out'
  code, results, log = _run(tmp_path, input=str(photos), output=str(out), faces='gfpgan',
                            face_checkpoint=tiny_gfpgan, save_faces=True)
  assert code == 0 and [r.error for r in results] == ['', ''], log
  assert 'astronaut.png: 1 face(s) restored (--faces=gfpgan)' in log
  assert 'coffee.png: 0 face(s) restored' in log and 'restored 2 of 2 photos' in log
  coffee = np.asarray(Image.open(out / 'coffee.png'))
  np.testing.assert_array_equal(coffee, skimage.data.coffee())
  got, want = np.asarray(Image.open(out / 'astronaut.png')), skimage.data.astronaut()
  left, top, right, bottom = ASTRONAUT_FACE
  inside = np.abs(got[top:bottom, left:right].astype(int) - want[top:bottom, left:right])
  assert inside.mean() > 10  # random weights: a very different face
  far = np.ones(want.shape[:2], bool)
  far[:260, 100:350] = False  # the crop's footprint and its blur stay inside this
  np.testing.assert_array_equal(got[far], want[far])
  before = image_io.read_image(out / 'astronaut_face01_before.png')
  after = image_io.read_image(out / 'astronaut_face01_after.png')
  assert before.shape == after.shape == (64, 64, 3)
  assert not os.path.exists(out / 'coffee_face01_before.png')
  # A checkpoint missing a variable: one line naming it.
  model, variables = weights.load_gfpgan(tiny_gfpgan)
  del model
  del variables['params']['toRGB_0']
  broken = str(tmp_path / 'broken.msgpack')
  weights.save_variables(broken, variables)
  code, _, log = _run(tmp_path, input=str(photos / 'coffee.png'), output=str(tmp_path / 'o.png'),
                      faces='gfpgan', face_checkpoint=broken)
  assert code == 2 and log.count('\n') == 1 and "missing variable 'params/toRGB_0" in log, log


@pytest.mark.slow
def test_restore_faces_wan_with_a_converted_face_generator(tmp_path):
  """restore --faces=wan with Wan et al.'s face generator as the converter writes it (msgpack
  and .json; random weights, a 32 px variant so that it compiles fast): the face crop follows
  the recorded size, the restored face is blended back, the rest is bitwise unchanged."""
  import jax  # pylint: disable=g-import-not-at-top
  from pikfix_jax.models import wan_face  # pylint: disable=g-import-not-at-top
  module = wan_face.FaceGenerator(load_size=32, ngf=2)
  variables = module.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))
  path = str(tmp_path / 'bopbtl_face_32.msgpack')
  weights.save_face_generator(path, variables, load_size=32)
  src = _write(tmp_path / 'astronaut.png', skimage.data.astronaut())
  dst = tmp_path / 'out.png'
  code, _, log = _run(tmp_path, input=src, output=str(dst), faces='wan', face_checkpoint=path,
                      save_faces=True)
  assert code == 0 and 'out.png: 1 face(s) restored (--faces=wan)' in log, log
  got, want = np.asarray(Image.open(dst)), skimage.data.astronaut()
  left, top, right, bottom = ASTRONAUT_FACE
  assert np.abs(got[top:bottom, left:right].astype(int) - want[top:bottom, left:right]).mean() > 2
  np.testing.assert_array_equal(got[300:], want[300:])
  assert image_io.read_image(tmp_path / 'out_face01_after.png').shape == (32, 32, 3)
