"""Scanning folders of photo files once, at pipeline construction.

Every file is probed with PIL. Plain 8-bit RGB/grey JPEGs and PNGs without EXIF rotation are
decoded later by TensorFlow from disk (fast, in the tf.data graph). Everything else PIL can read
(CMYK, 16-bit, transparency, EXIF-rotated, BMP/TIFF/WebP/GIF...) is decoded now with
`image_io.read_image` and kept in memory as PNG bytes, so the graph decodes both kinds the same
way. Unreadable files (truncated, corrupt, not images) are skipped with one warning each and
counted in a summary; none of them can fail mid-epoch.
"""

import collections
import dataclasses
import os

from absl import logging
from PIL import Image

from pikfix_jax import image_io


@dataclasses.dataclass(frozen=True)
class ImageFile:
  path: str  # Absolute path.
  id: str  # Path relative to the scanned root.
  inline: bytes  # PNG bytes prepared with PIL, or b'' when TensorFlow decodes `path` itself.
  height: int
  width: int


@dataclasses.dataclass
class ScanSummary:
  root: str
  usable: int = 0
  converted: int = 0
  small: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def __str__(self) -> str:
    skipped = sum(self.skipped.values())
    reasons = ', '.join(f'{n} {r}' for r, n in sorted(self.skipped.items()))
    return (f'{self.root}: {self.usable} usable images ({self.converted} converted with PIL, '
            f'{self.small} smaller than the crop and resized up), {skipped} skipped'
            + (f' ({reasons})' if reasons else ''))


def list_files(root: str) -> list[str]:
  """All non-hidden files under `root`, recursively, as sorted relative paths."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    found += [os.path.relpath(os.path.join(dirpath, f), root)
              for f in filenames if not f.startswith('.')]
  return sorted(found)


def probe(path: str, rel: str) -> ImageFile:
  """Checks one file (see module docstring). Raises image_io.ImageReadError if unusable."""
  try:
    with Image.open(path) as im:
      fmt, mode, (width, height) = im.format, im.mode, im.size
      orientation = im.getexif().get(0x0112, 1)
      direct = (fmt in ('JPEG', 'PNG') and mode in ('RGB', 'L') and orientation == 1
                and 'transparency' not in im.info and image_io.png_bit_depth(path) != 16)
      if direct and fmt == 'JPEG':
        im.draft(mode, (max(width // 8, 1), max(height // 8, 1)))  # Fast full-stream check.
        im.load()
    if direct and fmt == 'PNG':
      with Image.open(path) as im:
        im.verify()  # Walks every chunk and its CRC (must follow open): catches truncation.
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    reason = 'not an image file' if isinstance(e, Image.UnidentifiedImageError) else str(e)
    raise image_io.ImageReadError(f'{path}: {reason}') from e
  if direct:
    return ImageFile(path, rel, b'', height, width)
  rgb = image_io.read_image(path)
  return ImageFile(path, rel, image_io.encode_png(rgb), rgb.shape[0], rgb.shape[1])


def scan_folder(root: str, min_size: int = 0) -> tuple[list[ImageFile], ScanSummary]:
  """Probes every file under `root`; logs one warning per skipped file and a summary."""
  summary = ScanSummary(root)
  images = []
  for rel in list_files(root):
    try:
      image = probe(os.path.join(root, rel), rel)
    except image_io.ImageReadError as e:
      logging.warning('Skipping unreadable image %s', e)
      summary.skipped[_reason(str(e))] += 1
      continue
    images.append(image)
    summary.usable += 1
    summary.converted += bool(image.inline)
    summary.small += min(image.height, image.width) < min_size
  logging.info('Scanned %s', summary)
  return images, summary


def _reason(message: str) -> str:
  message = message.lower()
  if 'not an image' in message:
    return 'not images'
  if 'truncat' in message or 'broken' in message:
    return 'truncated'
  return 'unreadable'
