"""How well a model's output hue follows a palette (docs/RESTORE.md, "A palette as the
reference"):

  python -m pikfix_jax.palette_check --workdir=workdir/demo [--size=256]

Five bundled scikit-image photos, made grey and resized to size x size, are restored with
palette references (`palette.palette_reference`): one colour at 8 hues (hue of the output's mean
chroma against the colour's, as the README's reference control measures), and 4 dark/light
pairs (the darkest 30 % of the photo against the dark colour, the lightest 30 % against the
light one), the pairs also as a bare two-colour mosaic without the photo's structure.
"""

import dataclasses
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
import jax.numpy as jnp
import numpy as np
from PIL import Image
import skimage.data

from pikfix_jax import palette
from pikfix_jax import scoring
from pikfix_jax.ops import color

PHOTOS = ('camera', 'astronaut', 'chelsea', 'coffee', 'rocket')
HUES = tuple(range(0, 360, 45))
PAIRS = (('#3050a0', '#e0c060'), ('#a03020', '#80c0e0'), ('#206030', '#e090b0'),
         ('#603080', '#c0e070'))
TOLERANCE = scoring.HUE_TOLERANCE
# (grey photo sRGB (H, W, 3), reference sRGB) -> output sRGB (H, W, 3)
Restore = Callable[[np.ndarray, np.ndarray], np.ndarray]


def grey_photos(size: int, names: Sequence[str] = PHOTOS) -> dict[str, np.ndarray]:
  """Bundled photos, grey, size x size, sRGB float32."""
  out = {}
  for name in names:
    im = Image.fromarray(getattr(skimage.data, name)()).convert('L').convert('RGB')
    out[name] = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
  return out


def colour_of_hue(hue: float, lightness: float = 60.0, chroma: float = 45.0) -> str:
  """The hex colour of CIE Lab (lightness, chroma at `hue` degrees), clipped to sRGB."""
  ab = np.array([chroma * np.cos(np.radians(hue)), chroma * np.sin(np.radians(hue))]) / 110
  rgb = color.lab_normalized_to_rgb(jnp.full((1, 1, 1, 1), lightness / 100),
                                    jnp.asarray(ab, jnp.float32).reshape(1, 1, 1, 2))
  return palette.to_hex(np.asarray(rgb)[0, 0, 0])


def hue_and_chroma(rgb: np.ndarray, where: np.ndarray = None) -> tuple[float, float]:
  """Hue (degrees) and chroma (Lab units) of the mean chroma of `rgb` (over `where`)."""
  ab = np.asarray(color.rgb_to_lab_normalized(jnp.asarray(rgb[None], jnp.float32))[1])[0]
  mean = (ab if where is None else ab[where]).reshape(-1, 2).mean(0)
  return float(scoring.hue_angle(mean)), float(np.hypot(*mean) * 110)


def _error(hue: float, hex_colour: str) -> float:
  target, _ = hue_and_chroma(palette.parse_colour(hex_colour)[None, None])
  return float(scoring.angle_difference(hue, target))


@dataclasses.dataclass
class Report:
  single: np.ndarray  # (runs,) hue errors, one colour
  output_chroma: float
  palette_chroma: float
  pairs: np.ndarray  # (runs, 2) dark and light errors, palette reference
  mosaic: np.ndarray  # (runs, 2) the same with a bare mosaic

  def markdown(self) -> str:
    within = lambda e: f'{np.mean(e <= TOLERANCE) * 100:.0f} %'
    both = lambda e: f'{np.mean((e <= TOLERANCE).all(1)) * 100:.0f} %'
    rows = [
        '| palette | runs | hue within 30° | mean / max error |', '| --- | --- | --- | --- |',
        f'| one colour, {len(HUES)} hues | {len(self.single)} | {within(self.single)} | '
        f'{self.single.mean():.1f}° / {self.single.max():.1f}° |',
        f'| two colours, darkest 30 % vs the dark one | {len(self.pairs)} | '
        f'{within(self.pairs[:, 0])} | {self.pairs[:, 0].mean():.1f}° |',
        f'| two colours, lightest 30 % vs the light one | {len(self.pairs)} | '
        f'{within(self.pairs[:, 1])} | {self.pairs[:, 1].mean():.1f}° |',
        f'| two colours, both | {len(self.pairs)} | {both(self.pairs)} | |',
        f'| the pairs as a bare mosaic, both | {len(self.mosaic)} | {both(self.mosaic)} | |']
    return '\n'.join(rows) + (f'\n\nOutput chroma {self.output_chroma:.1f} against the '
                              f'palette\'s {self.palette_chroma:.1f} (one colour, mean).')


def measure(restore: Restore, photos: dict[str, np.ndarray]) -> Report:
  """Restores every photo with every palette (module docstring)."""
  single, chroma_out, chroma_in, pairs, mosaic = [], [], [], [], []
  for image in photos.values():
    for hue in HUES:
      hex_colour = colour_of_hue(hue)
      out_hue, out_chroma = hue_and_chroma(restore(image, palette.palette_reference(
          image, [hex_colour])))
      single.append(_error(out_hue, hex_colour))
      chroma_out.append(out_chroma)
      chroma_in.append(hue_and_chroma(palette.parse_colour(hex_colour)[None, None])[1])
    l = np.asarray(color.rgb_to_lab_normalized(jnp.asarray(image[None]))[0])[0, ..., 0]
    dark, light = l <= np.quantile(l, 0.3), l >= np.quantile(l, 0.7)
    for dark_colour, light_colour in PAIRS:
      bare = np.empty_like(image)
      half = image.shape[1] // 2
      bare[:, :half], bare[:, half:] = (palette.parse_colour(dark_colour),
                                        palette.parse_colour(light_colour))
      for reference, errors in ((palette.palette_reference(image, [dark_colour, light_colour]),
                                 pairs), (bare, mosaic)):
        out = restore(image, reference)
        errors.append((_error(hue_and_chroma(out, dark)[0], dark_colour),
                       _error(hue_and_chroma(out, light)[0], light_colour)))
  return Report(np.array(single), float(np.mean(chroma_out)), float(np.mean(chroma_in)),
                np.array(pairs), np.array(mosaic))


def define_flags() -> None:
  """Only when run as a program (other tools define --workdir too)."""
  flags.DEFINE_string('workdir', '', 'Training workdir of the model.')
  flags.DEFINE_string('checkpoint', '', 'Or an exported model.')
  flags.DEFINE_integer('size', 256, 'Side of the square grey photos.')


def main(argv):
  del argv
  f = flags.FLAGS
  from pikfix_jax import cli  # pylint: disable=g-import-not-at-top
  from pikfix_jax import restoring  # pylint: disable=g-import-not-at-top
  cli.setup()
  try:
    restorer, _ = restoring.build_restorer(restoring.Options(
        input='', output='', workdir=f.workdir, checkpoint=f.checkpoint))
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(measure(restorer, grey_photos(f.size)).markdown())


if __name__ == '__main__':
  define_flags()
  app.run(main)
