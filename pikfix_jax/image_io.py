"""Reading and writing photo files (PIL), shared by the data pipeline and the restore tool.

`read_image` returns float32 sRGB in [0, 1], shape (H, W, 3), whatever the file holds: EXIF
orientation is applied, 16-bit files keep their precision, palette/grey/CMYK images become RGB
and transparency is composited over white (the paper an old print sits on).
"""

import io
import os
from typing import Union

import numpy as np
from PIL import Image
from PIL import ImageOps

PathLike = Union[str, os.PathLike]
_ORIENTATION_TAG = 0x0112
_WRITE_FORMATS = {'.png': 'PNG', '.jpg': 'JPEG', '.jpeg': 'JPEG', '.bmp': 'BMP',
                  '.tif': 'TIFF', '.tiff': 'TIFF', '.webp': 'WEBP'}


class ImageReadError(ValueError):
  """A file that is not a readable image (the message names the file and the reason)."""


def read_image(path: PathLike) -> np.ndarray:
  """Reads any PIL-readable image file as float32 sRGB in [0, 1], shape (H, W, 3).

  Raises:
    ImageReadError: not an image, truncated or otherwise undecodable.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as im:
      im.load()  # Decodes now, so truncated files fail here rather than later.
      if _is_16bit_color_png(path, im):
        # PIL reduces 16-bit colour PNGs to 8 bits; TensorFlow's decoder keeps all 16.
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        return _orient(_decode_png16(path), orientation)
      return to_rgb_float(ImageOps.exif_transpose(im))
  except ImageReadError:
    raise
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    reason = 'not an image file' if isinstance(e, Image.UnidentifiedImageError) else str(e)
    raise ImageReadError(f'{path}: {reason}') from e


def to_rgb_float(im: Image.Image) -> np.ndarray:
  """A loaded PIL image of any mode -> float32 RGB in [0, 1], (H, W, 3)."""
  if im.mode.startswith('I;16') or im.mode == 'I':
    arr = np.asarray(im, np.float32)
    arr = arr / (65535.0 if im.mode != 'I' or arr.max() > 255 else 255.0)
  elif im.mode == 'F':
    arr = np.asarray(im, np.float32)
  elif im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in im.info:
    rgba = np.asarray(im.convert('RGBA'), np.float32) / 255.0
    alpha = rgba[..., 3:]
    arr = rgba[..., :3] * alpha + (1.0 - alpha)  # Composite over white.
  else:
    arr = np.asarray(im.convert('RGB'), np.float32) / 255.0
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), dtype=np.float32)


def write_image(path: PathLike, rgb: np.ndarray, *, quality: int = 95) -> None:
  """Writes float [0, 1] RGB (H, W, 3) or grey (H, W[, 1]) as 8 bits; format from the extension."""
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext not in _WRITE_FORMATS:
    raise ValueError(f'{path}: unknown image extension {ext!r}; use one of {sorted(_WRITE_FORMATS)}')
  arr = to_uint8(rgb)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fmt = _WRITE_FORMATS[ext]
  kwargs = {'quality': quality} if fmt in ('JPEG', 'WEBP') else {}
  Image.fromarray(arr).save(path, format=fmt, **kwargs)


def resize_float(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Float (H, W, C) -> (height, width, C), PIL bilinear (antialiased when shrinking)."""
  if image.shape[:2] == (height, width):
    return np.asarray(image, np.float32)
  return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                              .resize((width, height), Image.Resampling.BILINEAR))
                   for c in range(image.shape[-1])], axis=-1)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
  """Float [0, 1] -> uint8 with rounding (uint8 input is passed through)."""
  rgb = np.asarray(rgb)
  if rgb.dtype == np.uint8:
    return rgb
  return (np.clip(rgb.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
  """Float [0, 1] or uint8 image -> 8-bit PNG bytes (deterministic)."""
  buf = io.BytesIO()
  Image.fromarray(to_uint8(rgb)).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def png_bit_depth(path: PathLike) -> int:
  """Bits per sample of a PNG file (from its IHDR chunk); 0 for other files."""
  with open(path, 'rb') as f:
    header = f.read(26)
  if len(header) < 26 or not header.startswith(b'\x89PNG'):
    return 0
  return header[24]


def _is_16bit_color_png(path: str, im: Image.Image) -> bool:
  return im.format == 'PNG' and im.mode in ('RGB', 'RGBA') and png_bit_depth(path) == 16


def _decode_png16(path: str) -> np.ndarray:
  # Pillow reads 16-bit colour PNGs as 8 bits; TensorFlow keeps the 16 (imported here, as only
  # such files need it: a process that never reads one never loads TensorFlow).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tf.io.read_file(path)
  rgba = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy().astype(np.float32) / 65535.0
  if rgba.shape[-1] == 4:
    alpha = rgba[..., 3:]
    return np.ascontiguousarray(rgba[..., :3] * alpha + (1.0 - alpha))
  return np.ascontiguousarray(rgba[..., :3])


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
  """Applies an EXIF orientation (1-8) to an (H, W, C) array, like ImageOps.exif_transpose."""
  ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
         5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
         7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
         8: lambda a: np.rot90(a, 1)}
  return np.ascontiguousarray(ops.get(orientation, lambda a: a)(arr))
