r"""Writes a procedural scratch/paper texture bank and a contact sheet.

  python -m data_prep.make_textures --output_dir=DIR [--num=24 --size=512 --seed=0]

DIR/scratch/*.png and DIR/paper/*.png (grey, bright = defect on black) can be edited or
extended with your own scans and passed back as --config.data.degradation.texture_dir=DIR.
DIR/contact_sheet.png shows them all (scratch textures first).
"""

import os

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from pikfix_jax import image_io
from pikfix_jax.data import textures

_THUMB = 128


def write_bank(output_dir: str, num: int, size: int, seed: int) -> list[str]:
  """Writes the bank and the contact sheet; returns the written paths."""
  bank = textures.make_bank(num, size, seed)
  paths = []
  for kind, stack in (('scratch', bank.scratch), ('paper', bank.paper)):
    for i, tex in enumerate(stack):
      paths.append(os.path.join(output_dir, kind, f'{kind}_{i:03d}.png'))
      image_io.write_image(paths[-1], tex[..., None])
  thumbs = [np.asarray(Image.fromarray(t).resize((_THUMB, _THUMB), Image.Resampling.BOX))
            for t in list(bank.scratch) + list(bank.paper)]
  cols = 8
  rows = -(-len(thumbs) // cols)
  sheet = np.full((rows * (_THUMB + 4), cols * (_THUMB + 4)), 255, np.uint8)
  for k, t in enumerate(thumbs):
    r, c = divmod(k, cols)
    sheet[r * (_THUMB + 4):r * (_THUMB + 4) + _THUMB, c * (_THUMB + 4):c * (_THUMB + 4) + _THUMB] = t
  paths.append(os.path.join(output_dir, 'contact_sheet.png'))
  image_io.write_image(paths[-1], sheet[..., None])
  return paths


def define_flags() -> None:
  """Flags are defined only when run as a program, so the module stays importable."""
  flags.DEFINE_string('output_dir', None, 'Folder to write the textures into.', required=True)
  flags.DEFINE_integer('num', 24, 'Textures of each kind (scratch, paper).')
  flags.DEFINE_integer('size', 512, 'Side of every texture (px).')
  flags.DEFINE_integer('seed', 0, 'Random seed (the training pipeline uses seed 0).')


def main(argv):
  del argv
  f = flags.FLAGS
  paths = write_bank(f.output_dir, f.num, f.size, f.seed)
  print(f'Wrote {len(paths) - 1} textures and {paths[-1]}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
