"""The local web app's server (docs/RESTORE.md, "The web app"): a plain page over the project's
own functions, served by the standard library (`http.server`), no web framework.

Why no Gradio: docs/RESTORE.md says it (in short: every control the page needs, the brush on
the scratch mask, the eyedropper, the before/after slider, several references and the retrieval
thumbnails, is a few lines of plain JavaScript, while Gradio would add ~60 packages to a
JAX/TensorFlow environment and a frontend the tests could not pin).

One `App` holds the models (`restoring.build_restorer` of each --workdir / --checkpoint; one
that fails to load is listed with its one-line error), the optional reference corpus
(`restoring.ReferencePicker`: the retrieval of paper sec. 3.5), the optional face enhancer
(`restoring.face_enhancer` of --faces/--face_checkpoint, run after each method when the page's
Faces toggle is on) and a temporary folder with every upload and result (removed by
`App.close`). HTTP handler threads only read and write files and
JSON; one worker thread runs the models, job after job (JAX computations are not meant to
interleave on this CPU), and reports progress that the page polls.

JSON API (the page, pikfix_jax/app_static/, is its only client):
  GET  /api/info                   methods, corpus, limits
  POST /api/upload?kind=photo|reference&name=N   body: the file's bytes -> {id, url, ...}
  GET  /api/references?photo=ID    the corpus ranked for the photo: [{id, name, score, url}]
  POST /api/palette                {photo, colours: ['#rrggbb', ...]} -> a reference {id, url}
  POST /api/run                    {photo, references: [ID], methods: [ID], mask: PNG data URL,
                                    faces: bool}
  GET  /api/job?id=J               {state, message, done, total, results: [{..., faces: N}]}
  GET  /files/NAME                 an upload or result (previews; ?download=1 as an attachment)
"""

import base64
import dataclasses
import http.server
import io
import json
import os
import queue
import shutil
import socketserver
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from typing import Any, Callable, Optional

from absl import logging
import numpy as np
from PIL import Image

from pikfix_jax import artifacts
from pikfix_jax import faces
from pikfix_jax import image_io
from pikfix_jax import inference
from pikfix_jax import methods
from pikfix_jax import palette
from pikfix_jax import restoring
from pikfix_jax import scoring
from pikfix_jax import wan_release
from pikfix_jax.ops import color

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'app_static')
TINT_ID = 'tint'
TINT_LABEL = 'tint baseline: input L + the reference\'s mean chroma'
FACE_LABELS = {'wan': 'Wan et al.\'s face network', 'gfpgan': 'GFP-GAN'}
THUMB_SIDE = 160
_EXIF_ORIENTATION = 0x0112
_CONTENT_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                  '.css': 'text/css; charset=utf-8', '.png': 'image/png'}


@dataclasses.dataclass
class AppOptions:
  """What the command line sets (pikfix_jax/app.py's flags)."""
  workdirs: tuple = ()
  checkpoints: tuple = ()
  reference_dir: str = ''
  use_best: bool = False
  reference_size: int = inference.DEFAULT_REFERENCE_SIZE
  top_k: int = 8  # reference thumbnails shown
  index_image_size: int = 0
  max_upload_mb: float = 50.0
  host: str = '127.0.0.1'
  port: int = 7860
  with_scratch: bool = False  # a converted Wan et al. release detects and inpaints scratches
  faces: str = ''  # 'wan' or 'gfpgan': the page's Faces toggle (restoring.face_enhancer)
  face_checkpoint: str = ''


@dataclasses.dataclass
class LoadedMethod:
  """One model of the page: its restorer, or the one-line reason it is not there."""
  id: str
  label: str
  source: str
  restorer: Optional[inference.PhotoRestorer] = None
  error: str = ''

  def info(self) -> dict:
    r = self.restorer
    return {'id': self.id, 'label': self.label, 'source': self.source, 'error': self.error,
            'uses_reference': bool(r is not None and r.uses_reference),
            'multi_reference': bool(getattr(r, 'multi_reference', False)),
            'accepts_mask': bool(getattr(r, 'accepts_mask', False)),
            'max_pixels': int(getattr(r, 'max_pixels', 0) or 0)}


@dataclasses.dataclass
class Upload:
  """A photo or reference on the server: its file in the temporary folder and its pixels."""
  id: str
  name: str
  path: str  # the file as received (EXIF, alpha and all)
  image: np.ndarray  # sRGB (H, W, 3) in [0, 1], EXIF orientation applied
  url: str  # a PNG preview


class BadInput(Exception):
  """A one-line message for the page (HTTP 400/404/413)."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def _one_line(e: BaseException) -> str:
  text = ' '.join(str(e).split()) or type(e).__name__
  return text if len(text) <= 300 else text[:297] + '...'


class App:
  """Models, corpus, uploads and the job queue of one app process (module docstring)."""

  def __init__(self, options: AppOptions,
               restorers: Optional[dict[str, tuple[str, inference.PhotoRestorer]]] = None,
               face_enhancer: Optional[faces.FaceEnhancer] = None):
    """`restorers` {source: (label, restorer)} replaces loading --workdir/--checkpoint and
    `face_enhancer` loading --faces/--face_checkpoint (tests). A face network that does not load
    stops the start with its one-line error (restoring.face_enhancer's)."""
    self.options = options
    self.face_enhancer = face_enhancer or restoring.face_enhancer(restoring.Options(
        input='', output='', faces=options.faces, face_checkpoint=options.face_checkpoint))
    self.tmp = tempfile.mkdtemp(prefix='pikfix_app_')
    self.uploads: dict[str, Upload] = {}
    self.jobs: dict[str, dict] = {}
    self.methods: list[LoadedMethod] = []
    self._picker: Optional[restoring.ReferencePicker] = None
    self._corpus: list[str] = []
    self._lock = threading.Lock()  # uploads / jobs dicts
    self._model_lock = threading.Lock()  # one model computation at a time
    self._queue: queue.Queue = queue.Queue()
    if restorers is not None:
      for i, (source, (label, restorer)) in enumerate(restorers.items()):
        self.methods.append(LoadedMethod(f'm{i}', label, source, restorer))
    else:
      self._load_models()
    if options.reference_dir:
      if not os.path.isdir(options.reference_dir):
        raise artifacts.RestoreError(f'--reference_dir={options.reference_dir}: no such folder')
      self._corpus = restoring.list_images(options.reference_dir)
    self._worker = threading.Thread(target=self._work, name='pikfix-app-worker', daemon=True)
    self._worker.start()

  # ---------------------------------------------------------------------------- models
  def _load_models(self) -> None:
    sources = ([('workdir', w) for w in self.options.workdirs] +
               [('checkpoint', c) for c in self.options.checkpoints])
    for i, (kind, path) in enumerate(sources):
      method = LoadedMethod(f'm{i}', os.path.basename(os.path.normpath(path)), path)
      try:
        if not os.path.exists(path):
          raise artifacts.RestoreError(f'--{kind}={path}: no such directory')
        release = kind == 'checkpoint' and wan_release.is_release_dir(path)
        opts = restoring.Options(input='', output='', reference_size=self.options.reference_size,
                                 use_best=self.options.use_best, **{kind: path},
                                 with_scratch=release and self.options.with_scratch)
        method.restorer, config = restoring.build_restorer(opts)
        if config is not None:
          name = methods.method_class(config).label(config)
        elif release:
          name = 'Wan et al. 2020, released model' + (
              ', scratches detected and inpainted' if self.options.with_scratch else '')
        else:
          name = 'exported model'
        method.label = f'{name} ({os.path.basename(os.path.normpath(path))})'
      except Exception as e:  # pylint: disable=broad-except
        method.error = _one_line(e)
        if path not in method.error:
          method.error = f'{path}: {method.error}'
        logging.warning('Not loaded: %s', method.error)
      self.methods.append(method)

  def info(self) -> dict:
    return {'methods': [m.info() for m in self.methods],
            'tint': {'id': TINT_ID, 'label': TINT_LABEL},
            'reference_dir': os.path.basename(os.path.normpath(self.options.reference_dir))
                             if self.options.reference_dir else '',
            'corpus_size': len(self._corpus),
            'faces': ({'kind': self.face_enhancer.kind,
                       'label': FACE_LABELS[self.face_enhancer.kind]}
                      if self.face_enhancer is not None else None),
            'max_upload_bytes': int(self.options.max_upload_mb * 2 ** 20),
            'min_side': inference.MIN_SIDE}

  # ---------------------------------------------------------------------------- files
  def _file(self, suffix: str) -> tuple[str, str]:
    name = uuid.uuid4().hex[:12] + suffix
    return os.path.join(self.tmp, name), '/files/' + name

  def _save_png(self, rgb: np.ndarray, suffix: str = '.png', exif: bytes = b'') -> str:
    path, url = self._file(suffix)
    im = Image.fromarray(image_io.to_uint8(np.squeeze(rgb) if rgb.shape[-1] == 1 else rgb))
    im.save(path, format='PNG', compress_level=1, **({'exif': exif} if exif else {}))
    return url

  def _thumb(self, rgb: np.ndarray) -> str:
    h, w = rgb.shape[:2]
    s = min(1.0, THUMB_SIDE / max(h, w))
    return self._save_png(image_io.resize_float(rgb, max(1, round(h * s)), max(1, round(w * s))))

  def path_of(self, url_name: str) -> str:
    """The temporary file of /files/NAME (nothing outside the folder)."""
    name = os.path.basename(url_name)
    path = os.path.join(self.tmp, name)
    if not name or not os.path.isfile(path):
      raise BadInput(f'{name}: no such file (the app was restarted?)', 404)
    return path

  def add_upload(self, data: bytes, name: str, kind: str) -> dict:
    """Stores an uploaded photo or reference; BadInput for what cannot be one."""
    limit = self.options.max_upload_mb * 2 ** 20
    if len(data) > limit:
      raise BadInput(f'{name}: {len(data) / 2 ** 20:.1f} MB is above the upload limit of '
                     f'{self.options.max_upload_mb:g} MB (--max_upload_mb)', 413)
    if not data:
      raise BadInput(f'{name}: the file is empty')
    ext = os.path.splitext(name)[1].lower()
    path, _ = self._file(ext if ext in restoring.IMAGE_EXTENSIONS else '.bin')
    with open(path, 'wb') as f:
      f.write(data)
    try:
      image = image_io.read_image(path)
    except image_io.ImageReadError as e:
      os.remove(path)
      reason = str(e)[len(path):].lstrip(': ') if str(e).startswith(path) else str(e)
      raise BadInput(f'{name}: {reason}') from e
    h, w = image.shape[:2]
    if min(h, w) < inference.MIN_SIDE:
      os.remove(path)
      raise BadInput(f'{name}: the photo is {w}x{h} px; the smallest supported size is '
                     f'{inference.MIN_SIDE}x{inference.MIN_SIDE}')
    upload = Upload(uuid.uuid4().hex[:12], name, path, image, self._save_png(image))
    with self._lock:
      self.uploads[upload.id] = upload
    return {'id': upload.id, 'name': name, 'kind': kind, 'width': w, 'height': h,
            'url': upload.url, 'grey': bool(np.ptp(image, axis=-1).max() < 1 / 255)}

  def upload(self, upload_id: str) -> Upload:
    with self._lock:
      if upload_id not in self.uploads:
        raise BadInput(f'unknown upload {upload_id!r} (the app was restarted? upload again)', 404)
      return self.uploads[upload_id]

  # ------------------------------------------------------------------------ references
  def rank_references(self, photo_id: str) -> list[dict]:
    """The corpus ranked for the photo by retrieval (sec. 3.5), best first, with thumbnails."""
    if not self._corpus:
      raise BadInput('no reference folder: start the app with --reference_dir=DIR')
    photo = self.upload(photo_id)
    with self._model_lock:
      if self._picker is None:
        self._picker = restoring.ReferencePicker(
            reference_dir=self.options.reference_dir,
            index_image_size=self.options.index_image_size)
      ranked = self._picker.index.query(photo.image, top_k=self.options.top_k + 1)
    out = []
    me = os.path.abspath(photo.path)
    for path, score in ranked:
      path = self._picker._resolve(path)  # pylint: disable=protected-access
      if os.path.abspath(path) == me or len(out) >= self.options.top_k:
        continue
      key = 'dir:' + path
      with self._lock:
        known = self.uploads.get(key)
      if known is None:
        image = image_io.read_image(path)
        known = Upload(key, os.path.basename(path), path, image, self._thumb(image))
        with self._lock:
          self.uploads[key] = known
      out.append({'id': key, 'name': known.name, 'score': round(float(score), 4),
                  'url': known.url})
    return out

  def make_palette(self, photo_id: str, colours: list) -> dict:
    """A palette reference for the photo (`palette.palette_reference`), stored as an upload."""
    photo = self.upload(photo_id)
    try:
      rgb = palette.palette_reference(photo.image, colours)
    except ValueError as e:
      raise BadInput(_one_line(e)) from e
    hexes = [palette.to_hex(palette.parse_colour(c)) for c in colours]
    upload = Upload(uuid.uuid4().hex[:12], 'palette ' + ' '.join(hexes), '', rgb,
                    self._save_png(rgb))
    with self._lock:
      self.uploads[upload.id] = upload
    return {'id': upload.id, 'name': upload.name, 'url': upload.url, 'colours': hexes}

  # ------------------------------------------------------------------------------ jobs
  def submit(self, request: dict) -> str:
    """Queues a run; returns its job id (BadInput for a request that cannot run at all)."""
    photo = self.upload(str(request.get('photo', '')))
    references = [self.upload(str(r)) for r in request.get('references') or []]
    wanted = list(request.get('methods') or [])
    known = {m.id for m in self.methods} | {TINT_ID}
    unknown = [m for m in wanted if m not in known]
    if unknown or not wanted:
      raise BadInput('choose at least one method' if not wanted
                     else f'unknown method {unknown[0]!r}')
    mask = _decode_mask(request.get('mask'), photo.image.shape[:2])
    restore_faces = bool(request.get('faces'))
    if restore_faces and self.face_enhancer is None:
      raise BadInput('no face network: start the app with --faces=wan|gfpgan '
                     '--face_checkpoint=PATH')
    job_id = uuid.uuid4().hex[:12]
    job = {'id': job_id, 'state': 'queued', 'message': 'waiting for the previous run',
           'done': 0, 'total': len(wanted), 'results': [], 'started': time.time()}
    with self._lock:
      self.jobs[job_id] = job
    self._queue.put((job, photo, references, wanted, mask, restore_faces))
    return job_id

  def job(self, job_id: str) -> dict:
    with self._lock:
      if job_id not in self.jobs:
        raise BadInput(f'unknown job {job_id!r}', 404)
      return json.loads(json.dumps(self.jobs[job_id]))

  def _work(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        return
      job = item[0]
      try:
        self._run(*item)
        job['state'] = 'done'
        job['message'] = f'done in {time.time() - job["started"]:.1f} s'
      except Exception as e:  # pylint: disable=broad-except
        logging.error('Job failed: %s', traceback.format_exc())
        job['state'], job['message'] = 'error', _one_line(e)

  def _run(self, job: dict, photo: Upload, references: list[Upload], wanted: list[str],
           mask: Optional[np.ndarray], restore_faces: bool = False) -> None:
    """Each method in turn (the tint too); with `restore_faces` the face enhancer runs on each
    result, so that the columns differ by their method only."""
    job['state'] = 'running'
    exif = _exif_upright(photo.path)
    alpha = restoring.read_alpha(photo.path) if photo.path else None
    by_id = {m.id: m for m in self.methods}
    refs = [r.image for r in references]
    for n, method_id in enumerate(wanted):
      label = TINT_LABEL if method_id == TINT_ID else by_id[method_id].label
      job['message'] = f'{label}: running ({n + 1} of {len(wanted)})'
      result = {'method': method_id, 'label': label, 'error': ''}
      start = time.perf_counter()
      try:
        with self._model_lock:
          out = self._restore(method_id, by_id.get(method_id), photo.image, refs, mask)
          if restore_faces:
            job['message'] = f'{label}: restoring faces ({n + 1} of {len(wanted)})'
            face_start = time.perf_counter()
            out['rgb'] = self.face_enhancer(np.asarray(out['rgb']))
            result['faces'] = len(self.face_enhancer.last_faces)
            result['face_seconds'] = round(time.perf_counter() - face_start, 2)
        result['seconds'] = round(time.perf_counter() - start, 2)
        rgb = out['rgb']
        if alpha is not None:  # kept in the PNG download, as `restore` keeps it
          rgb = np.concatenate([rgb, alpha[..., None]], axis=-1)
        result['url'] = self._save_png(rgb, exif=exif)
        result['download_name'] = (os.path.splitext(photo.name)[0] + '_' +
                                   _slug(label) + '.png')
        if 'restored_l' in out:
          result['restored_l_url'] = self._save_png(np.clip(out['restored_l'], 0, 1))
        if 'scratch_mask' in out:
          result['mask_url'] = self._save_png(np.asarray(out['scratch_mask'], np.float32))
        result['mean_abs_difference'] = round(float(np.mean(np.abs(
            out['rgb'] - photo.image))), 4)
      except Exception as e:  # pylint: disable=broad-except
        result['error'] = _one_line(e)
        result['seconds'] = round(time.perf_counter() - start, 2)
      job['results'].append(result)
      job['done'] = n + 1

  def _restore(self, method_id: str, method: Optional[LoadedMethod], image: np.ndarray,
               refs: list[np.ndarray], mask: Optional[np.ndarray]) -> dict:
    """One method on one photo: {'rgb', ['restored_l', 'scratch_mask']} at the photo's size."""
    if method_id == TINT_ID:
      if not refs:
        raise BadInput('the tint needs a reference (upload one, pick one or make a palette)')
      l = np.asarray(color.rgb_to_lab_normalized(image[None])[0])
      # The mean chroma over every reference's pixels (several references: all of them).
      pixels = np.concatenate([r[..., :3].reshape(1, -1, 1, 3) for r in refs], axis=1)
      return {'rgb': scoring.tint(l, pixels)[0]}
    if method.restorer is None:
      raise BadInput(method.error)
    r = method.restorer
    if r.uses_reference and not refs:
      raise BadInput(f'{method.label} needs a colour reference: upload one, pick one from the '
                     'folder or make a palette')
    if len(refs) > 1 and r.uses_reference and not getattr(r, 'multi_reference', False):
      raise BadInput(f'{method.label} takes one reference; {len(refs)} are chosen')
    if r.uses_reference:
      reference = refs if len(refs) > 1 else refs[0]
    else:  # a neutral placeholder it ignores (as `restore` passes)
      reference = np.full((inference.MIN_SIDE,) * 2 + (3,), 0.5, np.float32)
    accepts_mask = getattr(r, 'accepts_mask', False)
    if accepts_mask:
      r.mask = mask  # None: the method's scratch detector
    try:
      return r(image, reference, outputs=True)
    finally:
      if accepts_mask:
        r.mask = None

  def close(self) -> None:
    """Stops the worker and removes the temporary folder (uploads and results)."""
    self._queue.put(None)
    shutil.rmtree(self.tmp, ignore_errors=True)


def _slug(text: str) -> str:
  keep = ''.join(c if c.isalnum() else '_' for c in text.split(':')[0].split('(')[0].strip())
  return '_'.join(p for p in keep.split('_') if p).lower() or 'result'


def _decode_mask(data_url: Any, hw: tuple) -> Optional[np.ndarray]:
  """A PNG data URL of the edited scratch mask (white = scratch) -> (H, W) {0, 1}, or None."""
  if not data_url:
    return None
  try:
    raw = base64.b64decode(str(data_url).split(',', 1)[-1])
    with Image.open(io.BytesIO(raw)) as im:
      mask = np.asarray(im.convert('L'), np.float32) / 255.0
  except Exception as e:  # pylint: disable=broad-except
    raise BadInput(f'the scratch mask is not a PNG image: {_one_line(e)}') from e
  if mask.shape != tuple(hw):
    raise BadInput(f'the scratch mask is {mask.shape[1]}x{mask.shape[0]} px; the photo is '
                   f'{hw[1]}x{hw[0]}')
  return (mask > 0.5).astype(np.float32)


def _exif_upright(path: str) -> bytes:
  """The photo's EXIF with the orientation reset to 1 (its pixels were turned upright on
  reading), or b'' without EXIF."""
  if not path:
    return b''
  try:
    with Image.open(path) as im:
      exif = im.getexif()
      if not len(exif):
        return b''
      if _EXIF_ORIENTATION in exif:
        exif[_EXIF_ORIENTATION] = 1
      return exif.tobytes()
  except Exception:  # pylint: disable=broad-except
    return b''


# ---------------------------------------------------------------------------------- HTTP

class _Handler(http.server.BaseHTTPRequestHandler):
  """Routes requests to the App (`server.app`)."""

  server_version = 'pikfix-app'
  protocol_version = 'HTTP/1.1'

  @property
  def app(self) -> App:
    return self.server.app  # type: ignore[attr-defined]

  def log_message(self, format: str, *args) -> None:  # pylint: disable=redefined-builtin
    logging.debug('%s %s', self.address_string(), format % args)

  def _send(self, status: int, body: bytes, content_type: str, headers: dict = None) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _json(self, obj: Any, status: int = 200) -> None:
    self._send(status, json.dumps(obj).encode(), 'application/json')

  def _body(self) -> bytes:
    length = int(self.headers.get('Content-Length') or 0)
    limit = self.app.options.max_upload_mb * 2 ** 20
    if length > limit + 2 ** 20:  # the limit (+ a JSON envelope)
      while length > 0:  # read and dropped, so the browser sees the answer, not a reset
        length -= len(self.rfile.read(min(length, 2 ** 16)) or b'x' * length)
      raise BadInput(f'{length / 2 ** 20:.1f} MB is above the upload limit of '
                     f'{self.app.options.max_upload_mb:g} MB (--max_upload_mb)', 413)
    return self.rfile.read(length)

  def _handle(self, fn: Callable[[], None]) -> None:
    try:
      fn()
    except BadInput as e:
      self._json({'error': str(e)}, e.status)
    except Exception as e:  # pylint: disable=broad-except
      logging.error('Request %s failed: %s', self.path, traceback.format_exc())
      self._json({'error': _one_line(e)}, 500)

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    self._handle(self._get)

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    self._handle(self._post)

  def _get(self) -> None:
    url = urllib.parse.urlparse(self.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    if url.path in ('/', '/index.html'):
      return self._static('index.html')
    if url.path.startswith('/static/'):
      return self._static(url.path[len('/static/'):])
    if url.path == '/api/info':
      return self._json(self.app.info())
    if url.path == '/api/references':
      return self._json({'references': self.app.rank_references(query.get('photo', ''))})
    if url.path == '/api/job':
      return self._json(self.app.job(query.get('id', '')))
    if url.path.startswith('/files/'):
      path = self.app.path_of(url.path[len('/files/'):])
      with open(path, 'rb') as f:
        body = f.read()
      headers = {}
      if query.get('download'):
        name = os.path.basename(query.get('name') or path).replace('"', '')
        headers['Content-Disposition'] = f'attachment; filename="{name}"'
      return self._send(200, body, 'image/png', headers)
    raise BadInput(f'{url.path}: not found', 404)

  def _static(self, name: str) -> None:
    path = os.path.join(STATIC_DIR, os.path.basename(name))
    ext = os.path.splitext(path)[1]
    if not os.path.isfile(path) or ext not in _CONTENT_TYPES:
      raise BadInput(f'{name}: not found', 404)
    with open(path, 'rb') as f:
      self._send(200, f.read(), _CONTENT_TYPES[ext])

  def _post(self) -> None:
    url = urllib.parse.urlparse(self.path)
    query = dict(urllib.parse.parse_qsl(url.query))
    body = self._body()
    if url.path == '/api/upload':
      kind = query.get('kind', 'photo')
      return self._json(self.app.add_upload(body, query.get('name') or 'upload', kind))
    try:
      request = json.loads(body or b'{}')
    except ValueError as e:
      raise BadInput('the request is not JSON') from e
    if url.path == '/api/palette':
      return self._json(self.app.make_palette(str(request.get('photo', '')),
                                              list(request.get('colours') or [])))
    if url.path == '/api/run':
      return self._json({'job': self.app.submit(request)})
    raise BadInput(f'{url.path}: not found', 404)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
  """One thread per request (the page polls while a run is in progress)."""
  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, app: App, host: str, port: int):
    self.app = app
    super().__init__((host, port), _Handler)


def serve(app: App, host: str, port: int) -> Server:
  """A server bound to (host, port) (port 0: a free one; `server.server_address`); call
  `serve_forever()` on it."""
  return Server(app, host, port)
