r"""Eye and mouth boxes of every face crop in a folder, for GFP-GAN's facial-component losses
(Wang et al. 2021, sec. 3.3; config.data.face_components):

  python -m data_prep.face_components --input=FACES --output=components.json [--upsample=1]
  python -m data_prep.face_components --input=FFHQ512 --output=components.json \
      --ffhq_landmarks=FFHQ_eye_mouth_landmarks_512.pth

Per image (ids: paths relative to FACES, as the image_folder dataset names them) the left eye,
right eye and mouth as (centre x, centre y, half side) in the image's pixels, from dlib's 68
landmarks of the largest detected face (the extra `pip install -e .[faces]`), as GFP-GAN's
scripts/parse_landmark.py derives them from FFHQ's landmarks; null where no face is found
(the losses skip it). With --ffhq_landmarks, GFP-GAN's own file instead: its entry k belongs
to the image whose file name is the number k (FFHQ's 00000.png ...), scaled from 512 px to the
image's size; images without an entry get null.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

from pikfix_jax import faces
from pikfix_jax import image_io
from pikfix_jax.data import face_components
from pikfix_jax.data import files

_FLAGS: dict = {}  # name -> flag holder; defined when run as a program (define_flags)
RELEASE_SIZE = 512  # the side the release's FFHQ file measures in


def detect(image: np.ndarray, upsample: int = 0):
  """The components of the largest face dlib finds in `image`, or None."""
  found = faces.detect_faces(image, upsample)
  if not found:
    return None
  area = lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])
  face = max(found, key=area)
  return faces.component_boxes(face.landmarks, min(image.shape[:2]))


def from_release_file(path: str, images: list) -> dict:
  """{id: components or None} from the release's .pth (keys '%08d' of FFHQ indices)."""
  import numpy.dtypes  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  # weights_only (no arbitrary pickled code) with numpy arrays allowed: what the file holds.
  arrays = [np._core.multiarray._reconstruct, np.ndarray, np.dtype] + [  # pylint: disable=protected-access
      getattr(numpy.dtypes, n) for n in dir(numpy.dtypes) if n.endswith('DType')]
  try:
    with torch.serialization.safe_globals(arrays):
      entries = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    raise app.UsageError(f'--ffhq_landmarks={path}: cannot read it ({reason}); leave the flag '
                         'out to detect the boxes with dlib') from None
  by_number = {int(k): v for k, v in entries.items()}
  out = {}
  for image in images:
    stem = os.path.splitext(os.path.basename(image.id))[0]
    entry = by_number.get(int(stem)) if stem.isdigit() else None
    if entry is None:
      out[image.id] = None
      continue
    sx, sy = image.width / RELEASE_SIZE, image.height / RELEASE_SIZE
    out[image.id] = {name: [float(entry[name][0]) * sx, float(entry[name][1]) * sy,
                            float(entry[name][2]) * min(sx, sy)]
                     for name in face_components.COMPONENTS}
  return out


def define_flags() -> dict:
  """The program's flags (defined only when it runs, so that importing this module for
  `detect` / `from_release_file` defines none)."""
  return {
      'input': flags.DEFINE_string('input', None, 'Folder of aligned face crops (recursive).'),
      'output': flags.DEFINE_string('output', None, 'JSON file to write.'),
      'upsample': flags.DEFINE_integer('upsample', 0, "dlib detector's upsampling (1 finds "
                                       'faces from about 40 px, at 4x the time).'),
      'ffhq_landmarks': flags.DEFINE_string(
          'ffhq_landmarks', '', "GFP-GAN's FFHQ_eye_mouth_landmarks_512.pth to convert "
          'instead of detecting.'),
  }


def main(argv):
  del argv
  f = {k: v.value for k, v in _FLAGS.items()}
  if not f['input'] or not os.path.isdir(f['input']):
    raise app.UsageError(f'--input={f["input"]}: not a folder of face crops')
  if not f['output']:
    raise app.UsageError('--output=FILE.json is required')
  images, _ = files.scan_folder(f['input'])
  if f['ffhq_landmarks']:
    result = from_release_file(f['ffhq_landmarks'], images)
  else:
    result = {}
    for n, image in enumerate(images):
      result[image.id] = detect(image_io.read_image(image.path), f['upsample'])
      if (n + 1) % 100 == 0:
        logging.info('%d / %d images', n + 1, len(images))
  missing = sum(v is None for v in result.values())
  with open(f['output'], 'w') as f:
    json.dump({'format': face_components.FORMAT, 'faces': result}, f)
  print(f'{f["output"]}: {len(result) - missing} of {len(result)} images with components'
        + (f' ({missing} without: the component losses skip them)' if missing else ''))


if __name__ == '__main__':
  _FLAGS.update(define_flags())
  flags.mark_flags_as_required(['input', 'output'])
  app.run(main)
