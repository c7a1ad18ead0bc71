"""Faces after restoration: detect, align, restore with a face network, paste back
(docs/RESTORE.md "Faces"; docs/MODEL.md "Faces" lists the choices).

Two pipelines, one per face network:

- 'wan': Wan et al. 2020's release (microsoft/Bringing-Old-Photos-Back-to-Life,
  Face_Detection/detect_all_dlib.py and align_warp_back_multiple_dlib.py): dlib's frontal face
  detector and 68-point landmarks, summarised as 5 points (eye-corner midpoints, nose tip,
  mouth corners); a similarity transform onto the release's template scaled by 1.3 into a 256
  (or 512) crop; the restored face's histogram matched per channel to the aligned crop; warped
  back (bicubic) and blended with the eroded, Gaussian-blurred footprint of the crop.
- 'gfpgan': GFP-GAN's GFPGANer through facexlib's FaceRestoreHelper (xinntao/facexlib,
  facexlib/utils/face_restoration_helper.py): the FFHQ 5-point template (eye centres, nose tip,
  mouth corners at 512 px, scaled to the network's size), the same dlib landmarks as the
  landmark source (facexlib's RetinaFace would need a weights download), inverse-affine paste
  with its square soft mask (eroded, blurred by an amount set by the face's area).

Everything is float: photos (H, W, 3) in [0, 1]; coordinates are (x, y) = (column, row) with
pixel centres at integers (skimage's and OpenCV's convention); 3x3 matrices act on (x, y, 1).
dlib and the landmark models come with the `faces` extra (`pip install -e .[faces]`:
dlib-bin, face-recognition-models), nothing is downloaded at run time.

A photo without a detected face comes back as the same array, unchanged.
"""

import dataclasses
import functools
import importlib.util
import os
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from pikfix_jax import artifacts
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import weights

KINDS = ('wan', 'gfpgan')
INSTALL_HINT = 'pip install -e .[faces]'
LANDMARKS_68 = 'shape_predictor_68_face_landmarks.dat'

# A face network: an aligned face (S, S, 3) float32 in [0, 1] -> the restored face, same shape.
FaceNet = Callable[[np.ndarray], np.ndarray]


class FaceError(artifacts.RestoreError):
  """A face-pipeline problem the user can fix (missing extra, bad checkpoint); one line."""


# ---------------------------------------------------------------------------- detection


def landmark_model_path(name: str = LANDMARKS_68) -> str:
  """A dlib landmark model shipped by face-recognition-models, found without importing it (its
  __init__ imports pkg_resources, which setuptools >= 81 no longer installs)."""
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise FaceError(f'--faces needs the face-recognition-models package: {INSTALL_HINT}')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'models', name)
  if not os.path.exists(path):
    raise FaceError(f'{path}: missing from face-recognition-models; reinstall: {INSTALL_HINT}')
  return path


@functools.lru_cache(maxsize=None)
def _dlib_models():
  """(frontal face detector, 68-point shape predictor), loaded once per process (~0.5 s)."""
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FaceError(f'--faces needs dlib (the dlib-bin package): {INSTALL_HINT}') from e
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(landmark_model_path())


@dataclasses.dataclass
class Face:
  """A detected face: box (left, top, right, bottom) px and the 68 landmarks (68, 2) as (x, y)
  (iBUG 300-W order: 36-41 and 42-47 the eyes, 30 the nose tip, 48 and 54 the mouth corners)."""
  box: tuple[int, int, int, int]
  landmarks: np.ndarray


def to_uint8(image: np.ndarray) -> np.ndarray:
  """float [0, 1] -> uint8 (rounded), as the photo would be saved; uint8 passes through."""
  if image.dtype == np.uint8:
    return np.ascontiguousarray(image)
  return np.ascontiguousarray(np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8))


def detect_faces(image: np.ndarray, upsample: int = 0) -> list[Face]:
  """dlib's HOG frontal face detector and its 68 landmarks on an RGB photo (float [0, 1] or
  uint8). `upsample` 0, as the release: faces from about 80 px; each +1 halves that (and
  quadruples the time)."""
  detector, predictor = _dlib_models()
  rgb = to_uint8(image[..., :3])
  faces = []
  for rect in detector(rgb, upsample):
    shape = predictor(rgb, rect)
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
    faces.append(Face((rect.left(), rect.top(), rect.right(), rect.bottom()), points))
  return faces


def release_points(landmarks: np.ndarray) -> np.ndarray:
  """The release's 5 points (`search` in detect_all_dlib.py): each eye the midpoint of its two
  corners (36, 39 / 42, 45) truncated to int as the release does, nose tip 30, mouth corners
  48, 54."""
  lm = np.asarray(landmarks, np.float64)
  eyes = [np.trunc((lm[a] + lm[b]) / 2) for a, b in ((36, 39), (42, 45))]
  return np.stack(eyes + [lm[30], lm[48], lm[54]])


def ffhq_points(landmarks: np.ndarray) -> np.ndarray:
  """The 5 points of the FFHQ template (RetinaFace's): eye centres (mean of each eye's 6
  contour points, nearer the pupil than the corners' midpoint), nose tip 30, mouth corners."""
  lm = np.asarray(landmarks, np.float64)
  return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


# The 68-point model's points of GFP-GAN's facial components (image-left eye first).
COMPONENT_POINTS = {'left_eye': range(36, 42), 'right_eye': range(42, 48),
                    'mouth': range(48, 68)}
COMPONENT_MIN_HALF_512 = 16.0  # the release's smallest half side at a 512 px face


def component_boxes(landmarks: np.ndarray, face_side: float) -> dict[str, list[float]]:
  """GFP-GAN's facial components from 68 landmarks (its scripts/parse_landmark.py): per
  component the mean of its points (cx, cy) and the half side h = max(half the larger
  extent of its points, 16 px at a 512 px face, scaled to face_side)."""
  lm = np.asarray(landmarks, np.float64)
  floor = COMPONENT_MIN_HALF_512 * face_side / 512.0
  boxes = {}
  for name, points in COMPONENT_POINTS.items():
    p = lm[list(points)]
    half = max(float(np.max(p.max(0) - p.min(0))) / 2.0, floor)
    boxes[name] = [float(p[:, 0].mean()), float(p[:, 1].mean()), half]
  return boxes


# ---------------------------------------------------------------------------- templates

# The release's 5 points on a 256 face (_standard_face_pts, before its [-1, 1] scaling).
RELEASE_POINTS_256 = np.array([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4],
                               [292.0, 360.4]], np.float32)
RELEASE_FACE_SCALE = 1.3  # target_face_scale of both release scripts
# facexlib's FaceRestoreHelper: "standard 5 landmarks for FFHQ faces with 512 x 512".
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936],
                              [256.63416, 314.01935], [201.26117, 371.41043],
                              [313.08905, 371.15118]])
# GFPGANer's crop border (BGR (135, 133, 132) in facexlib), here RGB in [0, 1].
FFHQ_BORDER_RGB = np.array([132.0, 133.0, 135.0]) / 255.0


def release_template(size: int, scale: float = RELEASE_FACE_SCALE) -> np.ndarray:
  """compute_transformation_matrix's target points: the standard points in [-1, 1] (as float32,
  /256 - 1), shrunk by `scale` about the centre, into a size x size crop (256, or 512 in the
  release's _HR scripts)."""
  std = RELEASE_POINTS_256 / np.float32(256.0) - np.float32(1.0)
  return (std.astype(np.float64) * scale + 1.0) / 2.0 * size


def ffhq_template(size: int) -> np.ndarray:
  """FaceRestoreHelper's face_template for face_size = `size` (crop_ratio (1, 1))."""
  return FFHQ_TEMPLATE_512 * (size / 512.0)


# ----------------------------------------------------------------------------- geometry


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
  `src` (N, 2) onto `dst` (N, 2), as a 3x3 matrix: Umeyama 1991, what
  skimage.transform.SimilarityTransform.estimate computes."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s, d = src - mu_s, dst - mu_d
  cov = d.T @ s / len(src)
  u, sigma, vt = np.linalg.svd(cov)
  sign = np.ones(2)
  if np.linalg.det(cov) < 0:  # the best fit would reflect: flip the weakest axis
    sign[1] = -1
  rotation = u @ np.diag(sign) @ vt
  scale = float(sigma @ sign) / float(np.mean(np.sum(s ** 2, axis=1)))
  m = np.eye(3)
  m[:2, :2] = scale * rotation
  m[:2, 2] = mu_d - scale * rotation @ mu_s
  return m


def _catmull_rom(t: np.ndarray) -> list[np.ndarray]:
  """Keys' cubic convolution (a = -0.5) weights of the taps at -1, 0, 1, 2 for offsets t in
  [0, 1): skimage's bicubic (`cubic_interpolation`, _shared/interpolation.pxd)."""
  t2, t3 = t * t, t * t * t
  return [0.5 * (-t + 2 * t2 - t3), 1 + 0.5 * (-5 * t2 + 3 * t3), 0.5 * (t + 4 * t2 - 3 * t3),
          0.5 * (t3 - t2)]


def _source_coords(matrix: np.ndarray, shape: tuple[int, int], origin: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) that `matrix` maps each pixel of an output window of `shape` at `origin` to."""
  rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
  cols += origin[0]
  rows += origin[1]
  m = np.asarray(matrix, np.float64)
  return (m[0, 0] * cols + m[0, 1] * rows + m[0, 2], m[1, 0] * cols + m[1, 1] * rows + m[1, 2])


def inside_mask(hw: tuple[int, int], matrix: np.ndarray, output_shape: Sequence[int]
                ) -> np.ndarray:
  """warp(np.ones(hw), matrix, output_shape, order=0) without the photo-sized array: nearest
  neighbour is separable, so it is the product of the 1-D lookups of x and y."""
  x, y = _source_coords(matrix, (int(output_shape[0]), int(output_shape[1])), (0, 0))
  look = lambda n, t: ndimage.map_coordinates(np.ones(n), [t.ravel()], order=0,  # noqa: E731
                                              mode='grid-constant', cval=0.0).reshape(t.shape)
  return look(hw[1], x) * look(hw[0], y)


def warp(image: np.ndarray, matrix: np.ndarray, output_shape: Sequence[int], order: int = 1,
         cval=0.0, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
  """out[r, c] = `image` (H, W) or (H, W, C) sampled at matrix @ (c + x0, r + y0, 1), outside
  the image `cval` (a number or one per channel): skimage.transform.warp(image, matrix,
  output_shape, order, mode='constant', cval, preserve_range=True) (order 0: nearest, as
  scipy.ndimage; 1: bilinear; 3: Catmull-Rom bicubic, clipped to the input's range and cval as
  skimage clips), for the output window whose top-left pixel is `origin` = (x0, y0).
  float64."""
  image = np.asarray(image, np.float64)
  squeeze = image.ndim == 2
  if squeeze:
    image = image[..., None]
  h, w = int(output_shape[0]), int(output_shape[1])
  channels = image.shape[-1]
  cvals = np.broadcast_to(np.asarray(cval, np.float64), (channels,))
  x, y = _source_coords(matrix, (h, w), origin)
  if order in (0, 1):
    out = np.stack([ndimage.map_coordinates(image[..., c], [y, x], order=order,
                                            mode='grid-constant', cval=cvals[c], prefilter=False)
                    for c in range(channels)], axis=-1)
  elif order == 3:
    # Pad by 2 px of cval so that every tap outside the image reads cval, as skimage's 'C' mode.
    pad = 2
    padded = np.empty((image.shape[0] + 2 * pad, image.shape[1] + 2 * pad, channels))
    padded[...] = cvals
    padded[pad:-pad, pad:-pad] = image
    y0, x0 = np.floor(y), np.floor(x)
    wy, wx = _catmull_rom(y - y0), _catmull_rom(x - x0)
    out = np.zeros((h, w, channels))
    for i in range(4):
      ri = np.clip(y0.astype(np.int64) - 1 + i + pad, 0, padded.shape[0] - 1)
      row = np.zeros((h, w, channels))
      for j in range(4):
        ci = np.clip(x0.astype(np.int64) - 1 + j + pad, 0, padded.shape[1] - 1)
        row += wx[j][..., None] * padded[ri, ci]
      out += wy[i][..., None] * row
    lo, hi = image.min(), image.max()
    c0 = float(cvals[0])
    if np.all(cvals == c0) and not lo <= c0 <= hi and out.min() <= c0 <= out.max():
      lo, hi = min(lo, c0), max(hi, c0)  # skimage widens the range to keep cval (preserve_cval)
    out = np.clip(out, lo, hi)
  else:
    raise ValueError(f'warp order={order}: expected 0, 1 or 3')
  return out[..., 0] if squeeze else out


def erode(mask: np.ndarray, size: int, iterations: int = 1) -> np.ndarray:
  """cv2.erode(mask, np.ones((size, size)), iterations) on a (H, W) or (H, W, C) float mask:
  the minimum over a size x size square (anchor at size // 2), pixels outside the image
  ignored (OpenCV's default border for erosion). An empty kernel is OpenCV's 3 x 3."""
  if size <= 0:
    size = 3
  footprint = (size, size) + (1,) * (mask.ndim - 2)
  for _ in range(iterations):
    mask = ndimage.minimum_filter(mask, size=footprint, mode='nearest')
  return mask


def gaussian_kernel(ksize: int, sigma: float = 0.0) -> np.ndarray:
  """cv2.getGaussianKernel(ksize, sigma): for sigma <= 0 the fixed binomial kernels up to 7 taps,
  else sigma = 0.3 ((ksize - 1) / 2 - 1) + 0.8; normalised to sum 1."""
  tables = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
            7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}
  if sigma <= 0 and ksize in tables:
    return np.array(tables[ksize])
  if sigma <= 0:
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
  x = np.arange(ksize) - (ksize - 1) / 2
  k = np.exp(-x * x / (2 * sigma * sigma))
  return k / k.sum()


def gaussian_blur(mask: np.ndarray, ksize: int, sigma: float = 0.0) -> np.ndarray:
  """cv2.GaussianBlur(mask, (ksize, ksize), sigma): separable, reflect-101 borders."""
  k = gaussian_kernel(ksize, sigma)
  out = ndimage.correlate1d(np.asarray(mask, np.float64), k, axis=0, mode='mirror')
  return ndimage.correlate1d(out, k, axis=1, mode='mirror')


def match_histograms(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """The release's per-channel histogram matching (align_warp_back_multiple_dlib.py
  `match_histograms`) on 8-bit values: 256-bin histograms of each channel, and every source
  value v mapped to the smallest reference value r with CDF_ref(r) >= CDF_src(v). Images are
  float [0, 1] (quantised to 8 bits first, as the release's files are) or uint8; returns float
  [0, 1], multiples of 1/255."""
  src, ref = to_uint8(source), to_uint8(reference)
  out = np.empty(src.shape, np.float64)
  for c in range(src.shape[-1]):
    src_cdf = np.cumsum(np.bincount(src[..., c].ravel(), minlength=256)).astype(np.float64)
    ref_cdf = np.cumsum(np.bincount(ref[..., c].ravel(), minlength=256)).astype(np.float64)
    src_cdf /= src_cdf[-1]
    ref_cdf /= ref_cdf[-1]
    lut = np.minimum(np.searchsorted(ref_cdf, src_cdf, side='left'), 255)
    out[..., c] = lut[src[..., c]] / 255.0
  return out


# ---------------------------------------------------------------------------- paste back


def _footprint_window(matrix: np.ndarray, size: int, margin: int, hw: tuple[int, int]
                      ) -> Optional[tuple[int, int, int, int]]:
  """(x0, y0, x1, y1): the photo pixels that the size x size crop maps onto through `matrix`
  (crop -> photo), grown by `margin`, inside the photo; None if they miss it. Pasting inside
  this window gives the whole-photo computation's result exactly (outside, the mask is 0 and
  the photo unchanged)."""
  # Bicubic reads 2 px around the crop's pixel centres, bilinear 1: corners 3 px out.
  lo, hi = -3, size + 2
  corners = np.array([[lo, lo, 1], [hi, lo, 1], [lo, hi, 1], [hi, hi, 1]], np.float64)
  xy = corners @ np.asarray(matrix, np.float64).T
  x0 = max(int(np.floor(xy[:, 0].min())) - margin, 0)
  y0 = max(int(np.floor(xy[:, 1].min())) - margin, 0)
  x1 = min(int(np.ceil(xy[:, 0].max())) + margin + 1, hw[1])
  y1 = min(int(np.ceil(xy[:, 1].max())) + margin + 1, hw[0])
  return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


# The release's blur_blending_cv2: erode 3 x (9 x 9), GaussianBlur (25, 25) with sigma 0.
RELEASE_ERODE, RELEASE_ERODE_ITERATIONS, RELEASE_BLUR = 9, 3, 25


def release_paste(photo: np.ndarray, face: np.ndarray, aligned: np.ndarray,
                  to_photo: np.ndarray) -> np.ndarray:
  """Wan et al.'s warp back and blend of one restored face (align_warp_back_multiple_dlib.py):
  histogram-match `face` to `aligned` (the crop it was restored from), warp it into the photo
  (bicubic, with the inverse of the alignment: `to_photo` maps crop -> photo), and blend
  face * m + photo * (1 - m), m the crop's footprint in the photo (nearest neighbour, through
  the crop's own in-photo mask) eroded 3 x by 9 x 9 and blurred 25 x 25; clipped to [0, 1]."""
  size = face.shape[0]
  hw = photo.shape[:2]
  radius = RELEASE_ERODE_ITERATIONS * (RELEASE_ERODE // 2) + RELEASE_BLUR // 2
  window = _footprint_window(to_photo, size, 2 * radius + 4, hw)
  if window is None:
    return photo
  x0, y0, x1, y1 = window
  to_crop = np.linalg.inv(to_photo)
  # forward_mask: the crop pixels that come from inside the photo (nearest neighbour).
  forward_mask = inside_mask(hw, to_photo, (size, size))
  matched = match_histograms(face, aligned)
  back = warp(matched, to_crop, (y1 - y0, x1 - x0), order=3, origin=(x0, y0))
  mask = warp(forward_mask, to_crop, (y1 - y0, x1 - x0), order=0, origin=(x0, y0))
  mask = gaussian_blur(erode(mask, RELEASE_ERODE, RELEASE_ERODE_ITERATIONS), RELEASE_BLUR)
  out = photo.copy()
  region = photo[y0:y1, x0:x1].astype(np.float64)
  blended = back * mask[..., None] + region * (1.0 - mask[..., None])
  out[y0:y1, x0:x1] = np.clip(blended, 0.0, 1.0)
  return out


def ffhq_paste(photo: np.ndarray, face: np.ndarray, to_crop: np.ndarray) -> np.ndarray:
  """facexlib's paste_faces_to_input_image (upscale 1, no face parsing): the face warped back
  bilinearly with the inverse affine (`to_crop` maps photo -> crop), a square mask warped alike
  and eroded 2 x 2 (the black border), then eroded by 2 w and blurred (2 w + 1)^2 for
  w = floor(sqrt(mask area)) // 20; blended face * m + photo * (1 - m)."""
  size = face.shape[0]
  hw = photo.shape[:2]
  to_photo = np.linalg.inv(to_crop)
  # w_edge grows with the face; bound it by the footprint's side for the window's margin.
  side = int(np.ceil(np.sqrt(abs(np.linalg.det(to_photo[:2, :2]))) * size))
  window = _footprint_window(to_photo, size, 3 * (side // 20) + 8, hw)
  if window is None:
    return photo
  x0, y0, x1, y1 = window
  shape = (y1 - y0, x1 - x0)
  restored = warp(face, to_crop, shape, order=1, origin=(x0, y0))
  inv_mask = erode(warp(np.ones((size, size)), to_crop, shape, order=1, origin=(x0, y0)), 2)
  w_edge = int(np.sum(inv_mask) ** 0.5) // 20
  soft = gaussian_blur(erode(inv_mask, 2 * w_edge), 2 * w_edge + 1)[..., None]
  out = photo.copy()
  region = photo[y0:y1, x0:x1].astype(np.float64)
  out[y0:y1, x0:x1] = soft * (inv_mask[..., None] * restored) + (1.0 - soft) * region
  return out


# ---------------------------------------------------------------------------- networks


def gfpgan_face_net(path: str, seed: int = 0) -> tuple[FaceNet, int]:
  """(face net, face size) of a converted GFP-GAN (`data_prep.convert_weights --arch=gfpgan`):
  GFPGANer's use, face in [-1, 1], output clamped to [-1, 1]; its noise maps drawn from
  `seed` (the release draws fresh ones per call), so a photo gives the same output each run.
  A directory: a training workdir (or export) of configs/baselines/gfpgan.py
  (`trained_face_net`; its noise from its config.model.noise_seed)."""
  if os.path.isdir(path):
    return trained_face_net(path, 'gfpgan')
  if not os.path.isfile(path):
    raise FaceError(f'--face_checkpoint={path}: no such file')
  if path.endswith(('.pth', '.pt')):
    raise FaceError(f'--face_checkpoint={path}: convert it first: python -m '
                    'data_prep.convert_weights --arch=gfpgan --input=FILE --output=PATH.msgpack')
  try:
    model, variables = weights.load_gfpgan(path)
  except Exception as e:  # pylint: disable=broad-except
    reason = (str(e).splitlines() or [''])[0]
    if isinstance(e, OSError) or type(e).__module__.startswith('msgpack'):
      raise FaceError(f'--face_checkpoint={path}: unreadable ({type(e).__name__}: {reason}); '
                      'expected the msgpack of data_prep.convert_weights --arch=gfpgan') from e
    # load_gfpgan's checks (a missing, extra or misshapen variable) mostly name the file.
    reason = reason[len(path):].lstrip(' :') if reason.startswith(path) else reason
    raise FaceError(f'--face_checkpoint={path}: not a converted GFP-GAN: {reason}') from e
  return gfpgan_net(model, variables, seed), model.out_size


def gfpgan_net(model, variables: dict, seed: int = 0) -> FaceNet:
  """A GFPGANv1Clean and its variables as a face net (jitted once per process and size)."""
  key = jax.random.PRNGKey(seed)

  @jax.jit
  def forward(v, face):
    out, _ = model.apply(v, face[None] * 2.0 - 1.0, rngs={'noise': key}, return_rgb=False)
    return (jnp.clip(out[0], -1.0, 1.0) + 1.0) / 2.0

  return lambda face: np.asarray(forward(variables, jnp.asarray(face, jnp.float32)))


def trained_face_net(path: str, method: str) -> tuple[FaceNet, int]:
  """(face net, face size) of a training workdir or an export (`loading.load_generator`) of
  the face method `method` ('gfpgan', 'wan2020_face'): the network as the method runs a face
  (`Method.face_net`: the aligned crop in, its colours and grey variant as in training)."""
  try:
    _, variables, config = loading.load_generator(checkpoint=path)
  except (artifacts.RestoreError, ValueError, FileNotFoundError) as e:
    raise FaceError(f'--face_checkpoint={path}: {(str(e).splitlines() or [""])[0]}') from e
  if config.get('method') != method:
    raise FaceError(f'--face_checkpoint={path}: a training run of method '
                    f'{config.get("method", "pikfix")!r}; this face network takes one of '
                    f'configs/baselines/{method}.py or converted released weights')
  net, size = methods.get(config).face_net(variables)
  return (lambda face: np.asarray(net(jnp.asarray(face, jnp.float32)))), size


def wan_face_net(path: str) -> tuple[FaceNet, int]:
  """(face net, face size) of Wan et al.'s converted face generator (models/wan_face.py,
  `data_prep.convert_weights --arch=bopbtl_face`: the msgpack and the .json beside it that
  says its size, 256 or 512): the aligned face in [0, 1] in, the enhanced face in [0, 1] out,
  as the release's test_face.py runs it (BatchNorm with its running statistics). A directory:
  a training workdir (or export) of configs/baselines/wan2020_face.py (`trained_face_net`)."""
  if os.path.isdir(path):
    return trained_face_net(path, 'wan2020_face')
  if not os.path.isfile(path):
    raise FaceError(f'--face_checkpoint={path}: no such file or directory')
  try:
    model, variables = weights.load_face_generator(path)
  except Exception as e:  # pylint: disable=broad-except
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    reason = reason[len(path):].lstrip(' :') if reason.startswith(path) else reason
    raise FaceError(f'--face_checkpoint={path}: not a converted Wan et al. face generator: '
                    f'{reason}') from e
  forward = jax.jit(lambda v, face: model.apply(v, face[None])[0])
  return (lambda face: np.asarray(forward(variables, jnp.asarray(face, jnp.float32))),
          model.load_size)


# ---------------------------------------------------------------------------- the pipeline


@dataclasses.dataclass
class FaceCrop:
  """One face of the last photo: its detection, the aligned crop and the restored crop (after
  the release's colour matching for 'wan'), float (S, S, 3) in [0, 1]."""
  face: Face
  aligned: np.ndarray
  restored: np.ndarray


class FaceEnhancer:
  """Detects the faces of a (restored) photo, aligns each, restores it with a face network and
  pastes it back (the module docstring). `kind` 'wan' or 'gfpgan'; the network is `face_net`
  (any callable (S, S, 3) -> (S, S, 3) in [0, 1], with `face_size` S) or read from
  `checkpoint` (a converted GFP-GAN msgpack; Wan et al.'s converted face generator).
  `__call__(photo) -> photo`; `last_faces` holds the crops of the last photo."""

  def __init__(self, kind: str, checkpoint: str = '', face_net: Optional[FaceNet] = None,
               face_size: Optional[int] = None, upsample: int = 0, seed: int = 0):
    if kind not in KINDS:
      raise FaceError(f'--faces={kind}: use one of {", ".join(KINDS)}')
    _dlib_models()  # the extra's one-line error before any network is loaded
    self.kind, self.upsample = kind, upsample
    if face_net is None:
      if not checkpoint:
        raise FaceError(f'--faces={kind} needs --face_checkpoint=PATH (docs/RESTORE.md, "Faces")')
      # The network's own size sets the crop's (`face_size` is for a given `face_net`).
      face_net, face_size = (gfpgan_face_net(checkpoint, seed) if kind == 'gfpgan'
                             else wan_face_net(checkpoint))
    self.face_net = face_net
    self.face_size = int(face_size or (512 if kind == 'gfpgan' else 256))
    self.last_faces: list[FaceCrop] = []

  def align(self, photo: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
    """(aligned crop (S, S, 3) float, the crop -> photo matrix)."""
    s = self.face_size
    if self.kind == 'wan':
      # estimate(target_pts, landmark): crop -> photo; warp(image, affine): bilinear, black.
      to_photo = similarity_transform(release_template(s), release_points(face.landmarks))
      return warp(photo, to_photo, (s, s), order=1), to_photo
    # facexlib: estimateAffinePartial2D(landmark -> template), warpAffine (bilinear, grey).
    to_crop = similarity_transform(ffhq_points(face.landmarks), ffhq_template(s))
    to_photo = np.linalg.inv(to_crop)
    return warp(photo, to_photo, (s, s), order=1, cval=FFHQ_BORDER_RGB), to_photo

  def __call__(self, photo: np.ndarray) -> np.ndarray:
    """The photo (H, W, 3) float [0, 1] with its faces restored; the same array if none."""
    self.last_faces = []
    faces = detect_faces(photo, self.upsample)
    if not faces:
      return photo
    out = photo
    for face in faces:  # crops from the input photo, each pasted onto the result so far
      aligned, to_photo = self.align(photo, face)
      restored = np.asarray(self.face_net(aligned.astype(np.float32)), np.float64)
      if restored.shape != aligned.shape:
        raise ValueError(f'the face network returned {restored.shape}, expected {aligned.shape}')
      if self.kind == 'wan':
        out = release_paste(out, restored, aligned, to_photo)
        restored = match_histograms(restored, aligned)
      else:
        out = ffhq_paste(out, np.clip(restored, 0.0, 1.0), np.linalg.inv(to_photo))
      self.last_faces.append(FaceCrop(face, aligned.astype(np.float32),
                                      restored.astype(np.float32)))
    return out.astype(photo.dtype)
