"""Tests for pikfix_jax/image_io.py: every odd kind of photo file decodes to float RGB [0, 1]."""

import numpy as np
from PIL import Image
import pytest

from pikfix_jax import image_io


def _rgb(h=24, w=32, seed=0):
  return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_rgb_png_roundtrip_exact(tmp_path):
  arr = _rgb()
  Image.fromarray(arr).save(tmp_path / 'a.png')
  out = image_io.read_image(tmp_path / 'a.png')
  assert out.dtype == np.float32 and out.shape == (24, 32, 3)
  np.testing.assert_array_equal(image_io.to_uint8(out), arr)


def test_grayscale_becomes_three_equal_channels(tmp_path):
  Image.fromarray(_rgb()[..., 0]).save(tmp_path / 'g.jpg', quality=95)
  out = image_io.read_image(tmp_path / 'g.jpg')
  assert out.shape == (24, 32, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_16bit_gray_png_keeps_precision(tmp_path):
  arr = np.array([[0, 1000, 40000, 65535]], np.uint16)
  Image.fromarray(arr).save(tmp_path / 'g16.png')
  out = image_io.read_image(tmp_path / 'g16.png')
  np.testing.assert_allclose(out[0, :, 1], arr[0] / 65535.0, atol=1e-6)


def test_16bit_rgb_png_keeps_precision(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  arr = (np.random.default_rng(1).random((5, 6, 3)) * 65535).astype(np.uint16)
  tf.io.write_file(str(tmp_path / 'c16.png'), tf.io.encode_png(arr))
  out = image_io.read_image(tmp_path / 'c16.png')
  np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)  # PIL alone would give 8 bits.


def test_rgba_is_composited_over_white(tmp_path):
  arr = np.zeros((4, 4, 4), np.uint8)
  arr[..., 0] = 255  # Red...
  arr[:2, ..., 3] = 255  # ...opaque in the top half, transparent below.
  Image.fromarray(arr, 'RGBA').save(tmp_path / 'a.png')
  out = image_io.read_image(tmp_path / 'a.png')
  np.testing.assert_allclose(out[0, 0], [1, 0, 0])
  np.testing.assert_allclose(out[3, 3], [1, 1, 1])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
  Image.new('CMYK', (16, 16), (0, 255, 255, 0)).save(tmp_path / 'c.jpg', quality=98)  # Red ink.
  out = image_io.read_image(tmp_path / 'c.jpg')
  assert out.shape == (16, 16, 3)
  np.testing.assert_allclose(out[8, 8], [1, 0, 0], atol=0.05)


def test_exif_orientation_is_applied(tmp_path):
  arr = _rgb(10, 20)
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
  Image.fromarray(arr).save(tmp_path / 'r.png', exif=exif.tobytes())
  out = image_io.read_image(tmp_path / 'r.png')
  assert out.shape == (20, 10, 3)
  np.testing.assert_array_equal(image_io.to_uint8(out), np.rot90(arr, -1))


@pytest.mark.parametrize('orientation', range(1, 9))
def test_numpy_orientation_matches_pil(tmp_path, orientation):
  from PIL import ImageOps  # pylint: disable=g-import-not-at-top
  arr = _rgb(5, 7)
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(arr).save(tmp_path / 'o.png', exif=exif.tobytes())
  expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / 'o.png')))
  np.testing.assert_array_equal(image_io._orient(arr, orientation), expected)  # pylint: disable=protected-access


def test_truncated_jpeg_raises_naming_the_file(tmp_path):
  Image.fromarray(_rgb(64, 64)).save(tmp_path / 'full.jpg', quality=90)
  data = (tmp_path / 'full.jpg').read_bytes()
  (tmp_path / 'cut.jpg').write_bytes(data[:len(data) // 2])
  with pytest.raises(image_io.ImageReadError, match='cut.jpg'):
    image_io.read_image(tmp_path / 'cut.jpg')


def test_non_image_raises(tmp_path):
  (tmp_path / 'notes.txt').write_text('not a photo')
  with pytest.raises(image_io.ImageReadError, match='not an image'):
    image_io.read_image(tmp_path / 'notes.txt')


@pytest.mark.parametrize('ext,tol', [('.png', 0), ('.bmp', 0), ('.tif', 0), ('.jpg', 40)])
def test_write_then_read(tmp_path, ext, tol):
  arr = np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None], (16, 1, 3))
  image_io.write_image(tmp_path / f'sub/out{ext}', arr)
  back = image_io.to_uint8(image_io.read_image(tmp_path / f'sub/out{ext}'))
  assert np.abs(back.astype(int) - image_io.to_uint8(arr)).max() <= tol


def test_write_grey_and_unknown_extension(tmp_path):
  image_io.write_image(tmp_path / 'g.png', np.full((4, 5, 1), 0.5, np.float32))
  assert Image.open(tmp_path / 'g.png').mode == 'L'
  with pytest.raises(ValueError, match='extension'):
    image_io.write_image(tmp_path / 'x.xyz', np.zeros((2, 2, 3)))
