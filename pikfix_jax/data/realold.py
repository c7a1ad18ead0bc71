"""TFDS builder for RealOld (Pik-Fix sec. 4.1): real old photos paired with expert restorations.

The authors share RealOld on request (200 old black-and-white portraits, each restored and
colourised by Photoshop experts); it cannot be downloaded automatically. Put the files in a
manual directory (`--config.data.manual_dir=DIR`) laid out as

    DIR/old/<name>.<ext>        scanned old photos (grey or colour, any PIL-readable format)
    DIR/restored/<name>.<ext>   expert restorations, same <name> (extension may differ)
    DIR/reference/<name>.<ext>  optional colour reference for that photo

The dataset is built into `data_dir/realold/` on first use (test split only). A restored image
whose size differs from its old photo is resized to the old photo's size. Photos without a
restored partner, and unreadable files, are skipped with a warning.
"""

import os

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from pikfix_jax import image_io
from pikfix_jax.data import files

FOLDERS = ('old', 'restored', 'reference')


class RealOld(tfds.core.GeneratorBasedBuilder):
  """RealOld: real old photos and their expert restorations (test split only)."""

  name = 'realold'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds' default looks the package up through `importlib_resources`, which it does not
    # declare as a dependency; the answer is simply this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='RealOld (Pik-Fix, WACV 2023): old photos paired with expert restorations.',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(),
            'old': tfds.features.Image(shape=(None, None, 3)),
            'restored': tfds.features.Image(shape=(None, None, 3)),
            'reference': tfds.features.Image(shape=(None, None, 3)),  # 1x1 when absent.
            'has_reference': tfds.features.Scalar(np.bool_),
        }),
        homepage='https://github.com/DerrickXuNu/Pik-Fix',
        disable_shuffling=True)  # Keep the sorted-by-name order.

  def _split_generators(self, dl_manager):
    return {'test': self._generate_examples(os.fspath(dl_manager.manual_dir))}

  def _generate_examples(self, root: str):
    by_stem = {folder: _stems(os.path.join(root, folder)) for folder in FOLDERS}
    for stem, old_path in sorted(by_stem['old'].items()):
      if stem not in by_stem['restored']:
        logging.warning('RealOld: %s has no restored/%s.* partner; skipped.', old_path, stem)
        continue
      try:
        old = image_io.to_uint8(image_io.read_image(old_path))
        restored = image_io.to_uint8(image_io.read_image(by_stem['restored'][stem]))
        ref_path = by_stem['reference'].get(stem)
        reference = (image_io.to_uint8(image_io.read_image(ref_path)) if ref_path
                     else np.zeros((1, 1, 3), np.uint8))
      except image_io.ImageReadError as e:
        logging.warning('RealOld: skipping unreadable image %s', e)
        continue
      if restored.shape != old.shape:
        restored = np.asarray(Image.fromarray(restored).resize(
            (old.shape[1], old.shape[0]), Image.Resampling.BICUBIC))
      yield stem, {'id': stem, 'old': old, 'restored': restored, 'reference': reference,
                   'has_reference': ref_path is not None}


def _stems(folder: str) -> dict[str, str]:
  if not os.path.isdir(folder):
    return {}
  return {os.path.splitext(rel)[0]: os.path.join(folder, rel) for rel in files.list_files(folder)}
