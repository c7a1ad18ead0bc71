"""The web app (pikfix_jax/app.py, app_server.py) in a real browser: headless Chromium from the
system's packages, driven by Selenium with the system chromedriver (nothing downloaded)."""

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.data

from pikfix_jax import app_server
from pikfix_jax import artifacts
from pikfix_jax import inference
from pikfix_jax import palette

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
_EXIF_DATETIME = 0x0132


def _browser_or_skip():
  """Selenium's Chrome on the system chromium; a skip only off CI (in CI it must run)."""
  missing = [n for n, p in (('chromium', CHROMIUM), ('chromedriver', CHROMEDRIVER)) if not p]
  try:
    from selenium import webdriver  # pylint: disable=g-import-not-at-top
  except ImportError:
    webdriver = None
    missing.append('the selenium package')
  if missing:
    reason = (f'{" and ".join(missing)} not installed (apt-get install -y chromium '
              'chromium-driver; pip install -r requirements-dev.txt)')
    if os.environ.get('CI'):
      pytest.fail(f'CI is set, so the browser test must run: {reason}')
    pytest.skip(reason)
  return webdriver


def _serve(initial_workdir: str, root, **options):
  """The app on a free local port with the tiny workdir, a missing one and a reference
  folder; yields (url, App, root) and checks on exit that its temporary folder is removed."""
  corpus = root / 'corpus'
  os.makedirs(corpus)
  for name in ('coffee', 'rocket', 'chelsea'):
    Image.fromarray(getattr(skimage.data, name)()[::4, ::4]).save(corpus / f'{name}.png')
  old = os.environ.get('PIKFIX_CACHE_DIR')
  os.environ['PIKFIX_CACHE_DIR'] = str(root / 'cache')
  options = app_server.AppOptions(workdirs=(initial_workdir, str(root / 'missing')),
                                  reference_dir=str(corpus), index_image_size=64,
                                  reference_size=64, top_k=3, max_upload_mb=1.0, port=0,
                                  **options)
  app = app_server.App(options)
  server = app_server.serve(app, '127.0.0.1', 0)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f'http://127.0.0.1:{server.server_address[1]}', app, root
  server.shutdown()
  server.server_close()
  app.close()
  assert not os.path.exists(app.tmp)
  if old is None:
    os.environ.pop('PIKFIX_CACHE_DIR', None)
  else:
    os.environ['PIKFIX_CACHE_DIR'] = old


@pytest.fixture(scope='module')
def served(initial_workdir, tmp_path_factory):
  yield from _serve(initial_workdir, tmp_path_factory.mktemp('app'))


@pytest.fixture(scope='module')
def served_with_faces(initial_workdir, tmp_path_factory):
  """The same app with a face network: Wan et al.'s face generator as the converter writes it
  (msgpack and .json; random weights, a 32 px variant that compiles fast, as tests/test_faces.py
  makes it)."""
  import jax  # pylint: disable=g-import-not-at-top
  from pikfix_jax import weights  # pylint: disable=g-import-not-at-top
  from pikfix_jax.models import wan_face  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('app_faces')
  module = wan_face.FaceGenerator(load_size=32, ngf=2)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  path = str(root / 'bopbtl_face_32.msgpack')
  weights.save_face_generator(path, variables, load_size=32)
  yield from _serve(initial_workdir, root, faces='wan', face_checkpoint=path)


def _post(url: str, data: bytes) -> tuple[int, dict]:
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method='POST')) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def test_api_refuses_bad_input_with_one_line(served):
  """Not an image, too large, a missing checkpoint: one-line messages (no traceback)."""
  url, app, _ = served
  code, body = _post(f'{url}/api/upload?name=notes.txt', b'hello, not a photo')
  assert code == 400 and body['error'] == 'notes.txt: not an image file'
  code, body = _post(f'{url}/api/upload?name=big.png', b'0' * (3 * 2 ** 20))
  assert code == 413 and 'upload limit of 1 MB' in body['error']
  methods = app.info()['methods']
  assert [bool(m['error']) for m in methods] == [False, True]
  assert 'missing: no such directory' in methods[1]['error'] and '\n' not in methods[1]['error']
  assert len(os.listdir(app.tmp)) == 0  # nothing of the refused files kept


@pytest.mark.slow
def test_page_restores_with_a_folder_reference_and_the_tint(served_with_faces, tmp_path):
  """Upload (a bad file first), pick the best-ranked folder reference, run the tiny Pik-Fix and
  the tint, both results differ from the input, download one: full size, EXIF kept; then
  astronaut with the Faces toggle off and on: the face region changes, one face reported."""
  webdriver = _browser_or_skip()
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support import expected_conditions  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  url, _, _ = served_with_faces
  downloads = tmp_path / 'downloads'
  os.makedirs(downloads)
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
              '--window-size=1400,1100'):
    opts.add_argument(arg)
  opts.add_experimental_option('prefs', {'download.default_directory': str(downloads),
                                         'download.prompt_for_download': False})
  driver = webdriver.Chrome(options=opts,
                            service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
  wait = WebDriverWait(driver, 60)
  try:
    driver.get(url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#methods input'))
    load_ms = driver.execute_script(
        'const t = performance.getEntriesByType("navigation")[0]; return t.loadEventEnd;')
    print(f'page load {load_ms:.0f} ms')

    # A file that is not an image: one line, and nothing else changes.
    bad = tmp_path / 'notes.txt'
    bad.write_text('not a photo')
    driver.find_element(By.ID, 'photo-input').send_keys(str(bad))
    wait.until(lambda d: d.find_element(By.ID, 'message').is_displayed())
    assert driver.find_element(By.ID, 'message').text == 'notes.txt: not an image file'
    driver.save_screenshot(str(tmp_path / 'bad_upload.png'))

    photo = skimage.data.astronaut()[::4, ::4][:100, :120]  # 100 x 120, odd sizes
    exif = Image.Exif()
    exif[_EXIF_DATETIME] = '1931:05:17 10:00:00'
    Image.fromarray(photo).convert('L').save(tmp_path / 'old.jpg', exif=exif, quality=95)
    driver.find_element(By.ID, 'photo-input').send_keys(str(tmp_path / 'old.jpg'))
    wait.until(lambda d: not d.find_element(By.ID, 'message').is_displayed())
    thumbs = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#ranked .thumb'))
    assert len(thumbs) == 3
    scores = [float(t.find_element(By.CLASS_NAME, 'score').text) for t in thumbs]
    assert scores == sorted(scores, reverse=True)  # best first
    thumbs[0].click()
    assert len(driver.find_elements(By.CSS_SELECTOR, '#selected-refs .chip')) == 1

    boxes = driver.find_elements(By.CSS_SELECTOR, '#methods input')
    assert [b.get_attribute('value') for b in boxes if b.is_selected()] == ['m0', 'tint']
    driver.find_element(By.ID, 'run').click()
    results = wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '.card')) == 2 and
                         d.find_elements(By.CSS_SELECTOR, '.card img.result'))
    wait.until(lambda d: d.execute_script(
        'return [...document.querySelectorAll(".card img.result")]'
        '.every((i) => i.complete && i.naturalWidth > 0)'))
    cards = driver.find_elements(By.CSS_SELECTOR, '.card')
    assert [c.get_attribute('data-method') for c in cards] == ['m0', 'tint']
    assert all(' s' in c.find_element(By.TAG_NAME, 'h3').text for c in cards)  # time taken
    assert cards[0].find_elements(By.CSS_SELECTOR, 'img.restored-l')
    grey = np.asarray(Image.open(tmp_path / 'old.jpg').convert('RGB'), np.float32)
    for img in driver.find_elements(By.CSS_SELECTOR, '.card img.result'):
      with urllib.request.urlopen(img.get_attribute('src')) as r:
        out = np.asarray(Image.open(io.BytesIO(r.read())).convert('RGB'), np.float32)
      assert out.shape == grey.shape
      assert np.abs(out - grey).mean() > 1.0  # coloured: not the grey input
    assert len(results) == 2
    driver.save_screenshot(str(tmp_path / 'results.png'))

    link = cards[0].find_element(By.CLASS_NAME, 'download')
    name = link.get_attribute('download')
    link.click()
    path = downloads / name
    deadline = time.time() + 30
    while not path.exists() and time.time() < deadline:
      time.sleep(0.2)
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as im:
      assert im.format == 'PNG' and im.size == (120, 100)
      assert im.getexif().get(_EXIF_DATETIME) == '1931:05:17 10:00:00'

    # A palette by hex: a reference whose name lists its colours.
    driver.find_element(By.ID, 'hex-input').send_keys('#c04020')
    driver.find_element(By.ID, 'add-colour').click()
    driver.find_element(By.ID, 'make-palette').click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#selected-refs .chip')) == 2)
    assert '#c04020' in driver.find_elements(By.CSS_SELECTOR, '#selected-refs .chip')[1].text

    # Faces: the toggle is there (the app has a face network); the tint (cheap at 512 x 512)
    # with it off, then on. The chosen references stay when the photo changes.
    assert driver.find_element(By.ID, 'faces-box').is_displayed()
    Image.fromarray(skimage.data.astronaut()).convert('L').save(tmp_path / 'astronaut.png')
    driver.find_element(By.ID, 'photo-input').send_keys(str(tmp_path / 'astronaut.png'))
    wait.until(lambda d: '512 x 512' in d.find_element(By.ID, 'photo-name').text)
    for box in driver.find_elements(By.CSS_SELECTOR, '#methods input'):
      if box.is_selected() != (box.get_attribute('value') == 'tint'):
        box.click()
    faced = {}
    for on in (False, True):
      if driver.find_element(By.ID, 'faces-on').is_selected() != on:
        driver.find_element(By.ID, 'faces-on').click()
      wait.until(lambda d: not d.find_element(By.ID, 'run').get_attribute('disabled'))
      previous = driver.find_elements(By.CSS_SELECTOR, '.card')
      driver.find_element(By.ID, 'run').click()
      for old in previous:  # removed when the new run starts
        wait.until(expected_conditions.staleness_of(old))
      wait.until(lambda d: d.find_element(By.ID, 'progress').get_attribute('hidden') and
                 d.find_elements(By.CSS_SELECTOR, '.card img.result'))
      card = driver.find_element(By.CSS_SELECTOR, '.card')
      notes = card.find_elements(By.CLASS_NAME, 'faces-note')
      assert [n.text.split(' (')[0] for n in notes] == (['1 face restored'] if on else [])
      with urllib.request.urlopen(card.find_element(By.CSS_SELECTOR, 'img.result')
                                  .get_attribute('src')) as r:
        faced[on] = np.asarray(Image.open(io.BytesIO(r.read())).convert('RGB'), np.int32)
    driver.save_screenshot(str(tmp_path / 'faces.png'))
    left, top, right, bottom = 179, 83, 266, 170  # dlib's box of astronaut's face
    face = np.abs(faced[True] - faced[False])[top:bottom, left:right]
    assert face.mean() > 2  # random weights: another face
    far = np.ones(faced[True].shape[:2], bool)
    far[:260, 100:350] = False  # the crop's footprint and its blur stay inside this
    np.testing.assert_array_equal(faced[True][far], faced[False][far])
  finally:
    driver.quit()


def test_palette_reference_follows_the_palette_in_lightness_order():
  """One colour: the input's lightness with that colour's chroma; two: the darker colour on the
  darker half."""
  grey = np.repeat(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], 3, axis=-1)
  grey = np.repeat(grey, 16, axis=0)
  blue = palette.palette_reference(grey, ['#2040c0'])
  assert blue.shape == (16, 64, 3) and (blue[8, 32, 2] > blue[8, 32, 0])
  two = palette.palette_reference(grey, ['#f0e040', '#402080'], blur=0)  # light yellow, dark purple
  left, right = two[:, 5:25].mean((0, 1)), two[:, 40:60].mean((0, 1))
  assert left[2] > left[1] and right[1] > right[2]  # purple dark half, yellow light half
  with pytest.raises(ValueError, match='not a hex colour'):
    palette.parse_colour('#12345')


@pytest.mark.slow
def test_app_command_listens_locally_and_removes_its_files_on_exit(tmp_path):
  """`python -m pikfix_jax.app` with a missing workdir: starts on 127.0.0.1, lists the model
  with its one-line error, and SIGTERM removes its temporary folder."""
  env = dict(os.environ, TMPDIR=str(tmp_path), JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, '-m', 'pikfix_jax.app', '--port=0',
                           f'--workdir={tmp_path / "nothing"}'], cwd=REPO, env=env,
                          stderr=subprocess.PIPE, text=True)
  try:
    line = ''
    deadline = time.time() + 120
    while 'http://' not in line and time.time() < deadline:
      line = proc.stderr.readline()
    found = re.search(r'http://127\.0\.0\.1:\d+/', line)
    assert found, line
    url = found.group(0)
    with urllib.request.urlopen(url + 'api/info') as r:
      info = json.load(r)
    assert 'no such directory' in info['methods'][0]['error']
    assert len([n for n in os.listdir(tmp_path) if n.startswith('pikfix_app_')]) == 1
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
  assert proc.returncode == 0
  assert not [n for n in os.listdir(tmp_path) if n.startswith('pikfix_app_')]


class _MaskedRestorer(inference.PhotoRestorer):
  """Stands in for Wan et al.'s restorer (no reference, a scratch mask, a pixel limit)."""

  uses_reference = False
  accepts_mask = True
  max_pixels = 64 * 64

  def __init__(self):
    super().__init__(reference_size=64)
    self.mask, self.seen = None, []

  def restore_padded(self, l, reference):
    if l.shape[1] * l.shape[2] > self.max_pixels:
      raise artifacts.RestoreError(f'the padded photo is above this model\'s {self.max_pixels} '
                                   'pixels at once')
    self.seen.append(None if self.mask is None else np.asarray(self.mask))
    detected = (l > 0.5).astype(np.float32)
    return {'rgb': jnp.repeat(1.0 - l, 3, axis=-1), 'restored_l': 1.0 - l,
            'scratch_mask': detected}


def _wait(app, job_id):
  deadline = time.time() + 60
  while app.job(job_id)['state'] in ('queued', 'running') and time.time() < deadline:
    time.sleep(0.05)
  return app.job(job_id)


def test_scratch_mask_round_trip_and_a_method_limit(tmp_path):
  """The detector's mask comes back with the result; an edited mask (a PNG data URL, as the
  page's brush canvas sends it) reaches the restorer for that run only; a photo above the
  method's limit is a one-line error in its result, the tint still runs; no reference for the
  tint is a one-line error too."""
  fake = _MaskedRestorer()
  app = app_server.App(app_server.AppOptions(), restorers={'fake': ('fake Wan', fake)})
  try:
    grey = np.zeros((40, 50, 3), np.uint8)
    grey[:, 25:] = 255
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format='PNG')
    photo = app.add_upload(buf.getvalue(), 'old.png', 'photo')
    assert photo['grey'] and (photo['width'], photo['height']) == (50, 40)

    job = _wait(app, app.submit({'photo': photo['id'], 'methods': ['m0']}))
    assert job['state'] == 'done' and not job['results'][0]['error']
    assert fake.seen == [None]  # the detector's own mask
    detected = np.asarray(Image.open(app.path_of(job['results'][0]['mask_url'])))
    assert detected.shape == (40, 50) and detected[:, 30:].min() == 255 and detected[:, :20].max() == 0

    edited = np.zeros((40, 50), np.uint8)
    edited[10:20, 5:15] = 255
    buf = io.BytesIO()
    Image.fromarray(edited).convert('RGBA').save(buf, format='PNG')
    data_url = 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()
    job = _wait(app, app.submit({'photo': photo['id'], 'methods': ['m0'], 'mask': data_url}))
    assert job['state'] == 'done'
    np.testing.assert_array_equal(fake.seen[-1], edited / 255.0)
    assert fake.mask is None  # not kept for the next photo
    with pytest.raises(app_server.BadInput, match='scratch mask is 60x40 px; the photo is 50x40'):
      app.submit({'photo': photo['id'], 'methods': ['m0'], 'mask': _png_data_url((40, 60))})

    big = io.BytesIO()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(big, format='PNG')
    large = app.add_upload(big.getvalue(), 'large.png', 'photo')
    ref = app.add_upload(buf.getvalue(), 'ref.png', 'reference')
    job = _wait(app, app.submit({'photo': large['id'], 'references': [ref['id']],
                                 'methods': ['m0', 'tint']}))
    errors = [r['error'] for r in job['results']]
    assert 'above this model\'s 4096 pixels' in errors[0] and '\n' not in errors[0]
    assert errors[1] == ''
    job = _wait(app, app.submit({'photo': large['id'], 'methods': ['tint']}))
    assert 'the tint needs a reference' in job['results'][0]['error']
  finally:
    app.close()


def _png_data_url(hw):
  buf = io.BytesIO()
  Image.fromarray(np.zeros(hw, np.uint8)).save(buf, format='PNG')
  return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()


def test_palette_check_tells_a_uniform_tint_from_placed_colours():
  """palette_check on the tint baseline: one colour is followed (its hue is the palette's),
  two colours never both (a uniform tint cannot put them on dark and light parts), while the
  palette reference itself has both in place."""
  from pikfix_jax import palette_check  # pylint: disable=g-import-not-at-top
  from pikfix_jax import scoring  # pylint: disable=g-import-not-at-top
  from pikfix_jax.ops import color  # pylint: disable=g-import-not-at-top

  def tint(image, reference):
    l = np.asarray(color.rgb_to_lab_normalized(jnp.asarray(image[None]))[0])
    return scoring.tint(l, reference[None])[0]

  photos = palette_check.grey_photos(48, ('camera', 'coffee'))
  report = palette_check.measure(tint, photos)
  assert np.mean(report.single <= 30) >= 0.9
  assert not (report.pairs <= 30).all(1).any()
  echo = palette_check.measure(lambda image, reference: reference, photos)
  assert (echo.pairs <= 30).all()
  assert '| one colour, 8 hues | 16 |' in report.markdown()


class _IdentityRestorer(inference.PhotoRestorer):
  """A reference-free method that returns the photo: what the face enhancer adds shows alone."""

  uses_reference = False

  def restore_padded(self, l, reference):
    return {'rgb': jnp.repeat(l, 3, axis=-1)}


def test_faces_toggle_restores_the_face_after_each_method_and_counts_it():
  """With a face enhancer (a stand-in face network) the run's `faces` restores astronaut's one
  face after the method: the face region changes, the rest is bitwise the method's result, and
  the result says one face; without the toggle nothing changes; an app without a face network
  refuses the toggle with one line."""
  from pikfix_jax import faces  # pylint: disable=g-import-not-at-top
  face_net = lambda face: face[::-1, ::-1]  # upside down (the release matches the colours)
  enhancer = faces.FaceEnhancer('wan', face_net=face_net, face_size=64)
  app = app_server.App(app_server.AppOptions(),
                       restorers={'grey': ('grey', _IdentityRestorer(reference_size=64))},
                       face_enhancer=enhancer)
  try:
    assert app.info()['faces'] == {'kind': 'wan', 'label': "Wan et al.'s face network"}
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).convert('L').save(buf, format='PNG')
    photo = app.add_upload(buf.getvalue(), 'astronaut.png', 'photo')
    results = {}
    for on in (False, True):
      job = _wait(app, app.submit({'photo': photo['id'], 'methods': ['m0'], 'faces': on}))
      assert job['state'] == 'done' and not job['results'][0]['error'], job
      results[on] = job['results'][0]
    assert 'faces' not in results[False] and results[True]['faces'] == 1
    off, on = (np.asarray(Image.open(app.path_of(results[k]['url'])), np.int32)
               for k in (False, True))
    left, top, right, bottom = 179, 83, 266, 170  # dlib's box of astronaut's face
    assert np.abs(on[top:bottom, left:right] - off[top:bottom, left:right]).mean() > 10
    far = np.ones(off.shape[:2], bool)
    far[:260, 100:350] = False  # the crop's footprint and its blur stay inside this
    np.testing.assert_array_equal(on[far], off[far])
  finally:
    app.close()
  plain = app_server.App(app_server.AppOptions(),
                         restorers={'grey': ('grey', _IdentityRestorer(reference_size=64))})
  try:
    assert plain.info()['faces'] is None
    with pytest.raises(app_server.BadInput, match='no face network: start the app with --faces'):
      plain.submit({'photo': plain.add_upload(buf.getvalue(), 'a.png', 'photo')['id'],
                    'methods': ['m0'], 'faces': True})
  finally:
    plain.close()
