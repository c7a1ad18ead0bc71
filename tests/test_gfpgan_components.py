"""GFP-GAN's facial-component losses (Wang et al. 2021, sec. 3.3, eq. 5): RoIAlign against
torchvision's kernel, the component discriminator against a torch transcription of the
release's, the boxes tool on a real face, the boxes in training batches, the losses' validity
weights, and one training step with every component discriminator."""

import json
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from configs import default
from pikfix_jax import methods
from pikfix_jax import weights
from pikfix_jax.data import face_components
from pikfix_jax.data import input_pipeline as ip
from pikfix_jax.losses import gfpgan as gfpgan_losses
from pikfix_jax.methods import gfpgan as gfpgan_method
from pikfix_jax.models import gfpgan
from pikfix_jax.ops import roi_align
import gfpgan_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data_prep import face_components as boxes_tool  # noqa: E402  pylint: disable=g-import-not-at-top


def _torch_roi_align(images, rois, size):
  """torchvision's roi_align when installed, else the loop transcription of its kernel."""
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    return ref.roi_align(images, rois, size)
  return torchvision.ops.roi_align(torch.from_numpy(images), torch.from_numpy(rois),
                                   output_size=size).numpy()


@pytest.mark.parametrize('size', [5, 8, 13])
def test_roi_align_matches_torchvision(size):
  """Boxes inside, across the border, smaller than a bin, larger than the output (adaptive
  sampling 2-3 per bin), on two images: within 1e-5."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 40, 36, 3)).astype(np.float32)
  boxes = np.array([[3.2, 4.7, 20.1, 18.3], [10, 12, 35.5, 39.9], [-2, -3, 8, 9],
                    [30, 1, 37, 40.5], [5, 5, 5.3, 5.2], [0, 0, 36, 40]], np.float32)
  index = np.array([0, 1, 0, 1, 0, 1])
  rois = np.concatenate([index[:, None].astype(np.float32), boxes], 1)
  want = _torch_roi_align(x.transpose(0, 3, 1, 2), rois, size).transpose(0, 2, 3, 1)
  got = np.asarray(roi_align.roi_align(jnp.asarray(x), jnp.asarray(boxes), jnp.asarray(index),
                                       size))
  assert got.shape == (6, size, size, 3) and np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_component_discriminator_matches_the_releases():
  """Random weights in the release's layout, every key mapped by the generator's key rule:
  logits and both style features equal the torch transcription's within 1e-4."""
  torch_model = ref.randomize_discriminator(ref.FacialComponentDiscriminator(1 / 16), 0)
  module = gfpgan.FacialComponentDiscriminator(1 / 16)
  x = np.random.default_rng(1).uniform(-1, 1, (2, 20, 20, 3)).astype(np.float32)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.asarray(x))
  expected = {weights.gfpgan_torch_key(tuple(path)): ((c, *path), leaf.shape)
              for (c, *path), leaf in flax.traverse_util.flatten_dict(
                  flax.core.unfreeze(shapes)).items()}
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  assert set(expected) == set(state)
  variables = weights.take_state(state, expected, 'component discriminator',
                                 lambda p, s: weights._gfpgan_perm(p[-1], len(s)))
  with torch.no_grad():
    want, want_features = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  got, features = module.apply(variables, jnp.asarray(x))
  assert got.shape == (2, 5, 5, 1)
  np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
  for a, b in zip(features, want_features, strict=True):
    np.testing.assert_allclose(a, b.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)
  # The release's sizes: 80 px eyes, 120 px mouth at 512, scaled with the face.
  assert [gfpgan.component_size(n, 512) for n in gfpgan.COMPONENTS] == [80, 80, 120]
  assert [gfpgan.component_size(n, 256) for n in gfpgan.COMPONENTS] == [40, 40, 60]


def test_boxes_tool_on_the_astronaut():
  """One face found on a crop of skimage's astronaut: the image-left eye left of the other,
  both above the mouth, sizes plausible; a photo without a face gives None."""
  photo = Image.fromarray(skimage.data.astronaut())
  crop = np.asarray(photo.crop((140, 30, 310, 200)).resize((128, 128), Image.BICUBIC))
  found = boxes_tool.detect(crop)
  assert set(found) == set(face_components.COMPONENTS)
  (lx, ly, lh), (rx, ry, rh), (mx, my, mh) = (found[n] for n in face_components.COMPONENTS)
  assert lx < mx < rx and max(ly, ry) < my - mh
  assert 20 < rx - lx < 60 and 4 <= lh < 20 and 4 <= mh < 30
  assert boxes_tool.detect(skimage.data.coffee()[:128, :128]) is None


def test_boxes_tool_converts_the_release_file(tmp_path):
  """The release's .pth (keys '%08d') -> the entry of the image whose name is that number,
  scaled from 512 px; others None."""
  path = tmp_path / 'lm.pth'
  entry = {'left_eye': np.array([190.0, 240.0, 20.0]), 'right_eye': np.array([320.0, 240.0,
           22.0]), 'mouth': np.array([256.0, 370.0, 40.0])}
  torch.save({'00000003': entry}, path)
  images = [boxes_tool.files.ImageFile('', '00003.png', b'', 256, 256),
            boxes_tool.files.ImageFile('', 'other.png', b'', 256, 256)]
  got = boxes_tool.from_release_file(str(path), images)
  assert got['other.png'] is None
  np.testing.assert_allclose(got['00003.png']['mouth'], [128.0, 185.0, 20.0])


def _folder(tmp_path):
  """Two 48 x 40 images: a white 8 x 8 square at columns 24-31, rows 20-27 in the first (its
  'mouth'), none in the second; the components file names the square and no face."""
  root = tmp_path / 'faces'
  root.mkdir()
  image = np.zeros((40, 48, 3), np.uint8)
  image[20:28, 24:32] = 255
  Image.fromarray(image).save(root / 'a.png')
  Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(root / 'b.png')
  # cx - h + 1 = 24, cx + h = 32 (the release's box convention): h = 4.5, cx = 27.5.
  faces = {'a.png': {'left_eye': [10.0, 10.0, 2.0], 'right_eye': [30.0, 10.0, 2.0],
                     'mouth': [27.5, 23.5, 4.5]}, 'b.png': None}
  path = tmp_path / 'components.json'
  path.write_text(json.dumps({'format': face_components.FORMAT, 'faces': faces}))
  return root, path


def _data_config(root, **data):
  c = default.get_config()
  c.dataset = 'image_folder'
  c.data.image_folder = str(root)
  c.data.image_size = 32
  c.data.val_fraction = 0.0
  c.data.train_repeats = 3
  c.data.reference_strategies = (1,)
  for k, v in data.items():
    c.data[k] = v
  return c


def test_training_batches_carry_the_boxes_of_their_crop(tmp_path):
  """Random 32 px windows of 48 x 40 images: the mouth box moved into each window covers the
  white square exactly; the face without components has validity 0; the other fields are
  those of the batches without the file."""
  root, path = _folder(tmp_path)
  plain = _data_config(root)
  c = _data_config(root, face_components=str(path))
  with_boxes = list(ip.train_dataset(c, epoch=0, batch_size=6).as_numpy_iterator())[0]
  without = list(ip.train_dataset(plain, epoch=0, batch_size=6).as_numpy_iterator())[0]
  assert set(with_boxes) - set(without) == {'face_boxes', 'face_box_valid'}
  for k in without:
    np.testing.assert_array_equal(with_boxes[k], without[k], err_msg=k)
  assert with_boxes['face_boxes'].shape == (6, 3, 4)
  for boxes, valid, target, name in zip(with_boxes['face_boxes'], with_boxes['face_box_valid'],
                                        with_boxes['target_lab'], with_boxes['id']):
    if name == b'b.png':
      assert not valid.any()
      continue
    assert valid[2] == 1.0
    x0, y0, x1, y1 = boxes[2]
    assert x1 - x0 == 8 and y1 - y0 == 8  # the release's boxes span 2h - 1 = 8 px
    bright = target[..., 0] > 0.5
    np.testing.assert_array_equal(np.argwhere(bright).min(0), [y0, x0])
    assert bright.sum() == 64
    # The left eye's centre (x 10, y 10) is in the window iff the window starts at x <= 10.
    offset_x, offset_y = 24 - x0, 20 - y0
    np.testing.assert_allclose(boxes[0], [8.2 - offset_x, 8.2 - offset_y, 12.8 - offset_x,
                                          12.8 - offset_y], atol=1e-5)  # h 2 x 1.4, from cx - h + 1
    assert valid[0] == float(offset_x <= 10) and valid[1] == 1.0


def test_components_file_errors_name_the_field(tmp_path):
  root, path = _folder(tmp_path)
  stale = tmp_path / 'stale.json'
  stale.write_text(json.dumps({'format': face_components.FORMAT, 'faces': {'a.png': None}}))
  with pytest.raises(ValueError, match='face_components=.*1 of 2 images have no entry'):
    ip.train_dataset(_data_config(root, face_components=str(stale)), epoch=0, batch_size=2)
  bad = tmp_path / 'bad.json'
  bad.write_text('{}')
  with pytest.raises(ValueError, match='not a face components file'):
    face_components.load(str(bad))


def test_a_face_without_boxes_contributes_nothing():
  """The component losses over valid faces only: changing the invalid face's logits and
  features changes no term, and its gradient is zero; all valid = the release's plain mean."""
  rng = np.random.default_rng(0)
  config = gfpgan_method.ml_collections.ConfigDict({'component_gan_weight': 1.0,
                                                    'comp_style_weight': 200.0})
  fake = {n: (jnp.asarray(rng.normal(size=(2, 3, 3, 1)), jnp.float32),
              [jnp.asarray(rng.normal(size=(2, 4, 4, 2)), jnp.float32) for _ in range(2)])
          for n in gfpgan.COMPONENTS}
  real = {n: [jnp.asarray(rng.normal(size=(2, 4, 4, 2)), jnp.float32) for _ in range(2)]
          for n in gfpgan.COMPONENTS}
  valid = jnp.asarray([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  total = lambda f: gfpgan_losses.component_generator_loss(f, real, valid, config)['comp_total']
  changed = jax.tree.map(lambda a: a.at[1].add(3.0), fake)
  terms = gfpgan_losses.component_generator_loss(fake, real, valid, config)
  assert float(total(changed)) == pytest.approx(float(terms['comp_total']), rel=1e-6)
  grads = jax.grad(total)(fake)
  assert all(float(jnp.abs(g[1]).max()) == 0.0 for g in jax.tree.leaves(grads))
  assert all(float(jnp.abs(g[0]).max()) > 0.0 for g in jax.tree.leaves(grads))
  # One valid face: its own terms, as a batch of one would give.
  logits = fake['mouth'][0]
  np.testing.assert_allclose(terms['comp_gan_mouth'],
                             jnp.mean(jax.nn.softplus(-logits[0])), rtol=1e-6)
  d = gfpgan_losses.component_discriminator_loss(logits, -logits, jnp.ones(2))
  np.testing.assert_allclose(d, 2 * jnp.mean(jax.nn.softplus(-logits)), rtol=1e-6)
  assert float(gfpgan_losses.component_discriminator_loss(logits, logits, jnp.zeros(2))) == 0.0


@pytest.mark.slow
def test_a_step_trains_the_generator_and_every_component_discriminator(tmp_path):
  """The tiny config with a components file: finite component terms; the generator and each
  component discriminator move; the face without boxes leaves the component terms as they are
  whatever its boxes; without the file, d_params holds no component discriminator."""
  from test_methods_gfpgan import _batch, tiny_config  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'c.json'
  path.write_text(json.dumps({'format': face_components.FORMAT, 'faces': {}}))
  method = methods.get(tiny_config(**{'data.face_components': str(path),
                                      'model.component_d_width': 0.0625}))
  state, frozen = method.init_state(0), method.init_frozen(0)
  batch = _batch(32)
  boxes = np.array([[6, 8, 14, 14], [18, 8, 26, 14], [10, 18, 22, 28]], np.float32)
  batch['face_boxes'] = jnp.asarray(np.stack([boxes, boxes]))
  batch['face_box_valid'] = jnp.asarray([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  step = jax.jit(method.train_step)
  new, scalars = step(state, batch, frozen)
  for name in gfpgan_method.COMPONENT_TERMS:
    assert np.isfinite(float(scalars[name])) and float(scalars[name]) > 0, name
  assert float(scalars['comp_valid']) == 0.5
  moved = lambda a, b: sum(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.any(x != y)),
                                                        a, b)))
  assert moved(state.g_params, new.g_params) > 0
  for name in gfpgan.COMPONENTS:
    n = len(jax.tree.leaves(state.d_params[name]))
    assert moved(state.d_params[name], new.d_params[name]) == n, name
  shifted = dict(batch, face_boxes=batch['face_boxes'].at[1].add(3.0))
  _, again = step(state, shifted, frozen)
  for name in gfpgan_method.COMPONENT_TERMS:
    np.testing.assert_allclose(again[name], scalars[name], rtol=1e-5, err_msg=name)
  plain = methods.get(tiny_config()).init_state(0)
  assert not set(gfpgan.COMPONENTS) & set(plain.d_params)
  # The face discriminator's init is the same with or without the components.
  face = {k: v for k, v in state.d_params.items() if k not in gfpgan.COMPONENTS}
  assert moved(face, plain.d_params) == 0
