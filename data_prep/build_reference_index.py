r"""Builds the reference-retrieval index of a folder of colour photos (paper section 3.5).

  python -m data_prep.build_reference_index --images=DIR --output=refs.npz \
      [--vgg19=weights/vgg19.msgpack]

Rerunning after an interruption resumes with the images not yet done; rerunning after adding
photos computes only the new ones. Unreadable files are skipped with a warning. The index is
what `config.data.retrieval_index` names; see docs/WEIGHTS.md.
"""

import os

from absl import app
from absl import flags

from pikfix_jax import retrieval
from pikfix_jax import weights

_IMAGES = flags.DEFINE_string('images', None, 'Folder of photos (searched recursively).')
_OUTPUT = flags.DEFINE_string('output', None, 'Index file to write (.npz).')
_VGG19 = flags.DEFINE_string('vgg19', '', 'Converted VGG-19 (data_prep.convert_weights) or a '
                             'torchvision .pth/.safetensors; empty = random features (warning).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Images per VGG-19 batch.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', retrieval.DEFAULT_IMAGE_SIZE,
                                   'Images are resized to this square side (multiple of 32).')
_GRID = flags.DEFINE_integer('grid', retrieval.DEFAULT_GRID,
                             'Cells per side of the pooled layout used for (co)variances.')
_NEIGHBORS = flags.DEFINE_integer('neighbors_k', 10, 'Nearest neighbours stored per image '
                                  '(training reference strategy 2); 0 = none.')

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(directory: str) -> list[str]:
  """Image files under `directory` (recursive), sorted, as paths joined onto `directory`."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    found += [os.path.join(root, f) for f in sorted(files)
              if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')]
  return found


def main(argv):
  del argv
  paths = list_images(_IMAGES.value)
  if not paths:
    raise app.UsageError(f'no images found under {_IMAGES.value}')
  vgg = None
  if _VGG19.value:
    vgg = weights.maybe_load_backbone(_VGG19.value, 'vgg19', weights.variable_shapes('vgg19'))
  retrieval.build_index(paths, _OUTPUT.value, vgg_variables=vgg, batch_size=_BATCH_SIZE.value,
                        image_size=_IMAGE_SIZE.value, grid=_GRID.value,
                        neighbors_k=_NEIGHBORS.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['images', 'output'])
  app.run(main)
