"""Facial-component boxes of a face folder (GFP-GAN's component losses, Wang et al. 2021
sec. 3.3): the JSON file data_prep.face_components writes, read into a table the training
pipeline gathers from by example index, and the boxes moved into a training crop.

File: {"format": FORMAT, "faces": {id: {"left_eye": [cx, cy, h], "right_eye": [...],
"mouth": [...]} or null}}, ids the image_folder dataset's (paths relative to the folder),
(cx, cy) a component's centre and h its half side in the image's own pixels (before any
enlargement; GFP-GAN's FFHQ_eye_mouth_landmarks_512.pth holds the same three numbers). null:
no face found; its boxes are invalid and the component losses skip that example.
"""

import json

import numpy as np
import tensorflow as tf

FORMAT = 'pikfix face components v1'
COMPONENTS = ('left_eye', 'right_eye', 'mouth')


def load(path: str) -> dict:
  """{id: {component: (cx, cy, h)} or None} of a components file (one-line errors)."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'config.data.face_components={path}: cannot read it ({e}); write it with '
                     'python -m data_prep.face_components') from None
  if not isinstance(data, dict) or data.get('format') != FORMAT:
    raise ValueError(f'config.data.face_components={path}: not a face components file (no '
                     f'"format": "{FORMAT}"); write it with python -m data_prep.face_components')
  return data['faces']


def table(path: str, ids: list[str], eye_enlarge_ratio: float) -> np.ndarray:
  """(len(ids), 3, 5) float32 rows (x0, y0, x1, y1, valid) of the components (COMPONENTS
  order) in image pixels, the eyes' half side enlarged by eye_enlarge_ratio, each box from
  (cx - h + 1, cy - h + 1) to (cx + h, cy + h) as the release's dataset makes them."""
  faces = load(path)
  missing = [i for i in ids if i not in faces]
  if missing:
    raise ValueError(f'config.data.face_components={path}: {len(missing)} of {len(ids)} images '
                     f'have no entry (e.g. {missing[0]!r}); rerun data_prep.face_components on '
                     'this folder')
  rows = np.zeros((len(ids), len(COMPONENTS), 5), np.float32)
  for n, i in enumerate(ids):
    if faces[i] is None:
      continue
    for k, name in enumerate(COMPONENTS):
      cx, cy, h = (float(v) for v in faces[i][name])
      if 'eye' in name:
        h *= eye_enlarge_ratio
      rows[n, k] = (cx - h + 1.0, cy - h + 1.0, cx + h, cy + h, 1.0)
  return rows


def in_crop(rows: tf.Tensor, scale_yx: tf.Tensor, y: tf.Tensor, x: tf.Tensor, size: int
            ) -> tuple[tf.Tensor, tf.Tensor]:
  """An example's rows (3, 5) in the pixels of its size x size crop at (y, x) of the image
  resized by scale_yx: (boxes (3, 4) float32, valid (3,) float32, 0 where the box is invalid
  or its centre falls outside the crop)."""
  sy, sx = scale_yx[0], scale_yx[1]
  offset = tf.stack([tf.cast(x, tf.float32), tf.cast(y, tf.float32)] * 2)
  boxes = rows[:, :4] * tf.stack([sx, sy, sx, sy]) - offset
  cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
  inside = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
  return boxes, rows[:, 4] * tf.cast(inside, tf.float32)
