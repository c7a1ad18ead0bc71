"""DeepLabV3 + MobileNetV3-Large (pikfix_jax/models/deeplab.py) against a torch transcription of
torchvision's deeplabv3_mobilenet_v3_large: names, parameter count, logits, conversion, CLI."""

import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
from torch.nn import functional as F

from data_prep import convert_weights
from pikfix_jax import weights
from pikfix_jax.models import deeplab
import torch_reference as ref

ARCH = 'deeplabv3_mobilenet_v3_large'
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# torchvision's DeepLabV3_MobileNet_V3_Large_Weights meta "num_params" (aux head included), and
# the aux head (FCNHead(40, 21): 40*10*9 conv + 2*10 BatchNorm + 10*21+21 conv) the Flax model
# leaves out.
TORCHVISION_NUM_PARAMS = 11_029_328
AUX_HEAD_PARAMS = 3_851


@pytest.fixture(scope='module')
def torch_model():
  calibration = np.random.default_rng(1).uniform(size=(4, 96, 96, 3)).astype(np.float32)
  return ref.random_deeplab(seed=5, calibration=ref.to_nchw(calibration))


@pytest.fixture(scope='module')
def files(torch_model, tmp_path_factory):
  return ref.save_both(torch_model.state_dict(), tmp_path_factory.mktemp('deeplab'), 'deeplab')


@pytest.fixture(scope='module')
def variables(files):
  """Converted from the .pth; the .safetensors gives the identical tree."""
  pth, st = files
  from_pth = weights.convert_files(ARCH, pth)
  jax.tree_util.tree_map(np.testing.assert_array_equal, weights.convert_files(ARCH, st), from_pth)
  return from_pth


@pytest.fixture(scope='module')
def apply():
  return jax.jit(deeplab.DeepLabV3MobileNetV3Large().apply, static_argnames='return_features')


def _state(torch_model):
  return {k: v.numpy() for k, v in torch_model.state_dict().items()}


def test_names_and_parameter_count_match_torchvision(torch_model):
  assert sum(p.numel() for p in torch_model.parameters()) == TORCHVISION_NUM_PARAMS
  shapes = weights.variable_shapes(ARCH)
  assert deeplab.param_count(shapes['params']) == TORCHVISION_NUM_PARAMS - AUX_HEAD_PARAMS
  assert deeplab.param_count() == 11_025_477
  flat = flax.traverse_util.flatten_dict(shapes)
  flax_keys = [weights.torch_key(tuple(path)) for (_, *path) in flat]
  assert len(set(flax_keys)) == len(flax_keys)  # one-to-one
  torch_keys = {k for k in torch_model.state_dict()
                if not k.startswith('aux_classifier.') and not k.endswith('num_batches_tracked')}
  assert set(flax_keys) == torch_keys
  for key in ('backbone.0.0.weight', 'backbone.4.block.2.fc1.bias',
              'backbone.13.block.1.0.weight', 'classifier.0.convs.4.2.running_var',
              'classifier.0.project.1.weight', 'classifier.4.bias'):
    assert key in torch_keys, key
  # The depthwise kernel of the first dilated block: (5, 5, 1, 672) HWIO.
  assert flat[('params', 'backbone_13', 'block_1_0', 'kernel')].shape == (5, 5, 1, 672)


@pytest.mark.parametrize('size', [(4, 4, 64, 64), (5, 4, 72, 56), (5, 4, 71, 53), (1, 1, 7, 5),
                                  (3, 2, 3, 5)])
def test_upsample_matches_torch_interpolate(size):
  h, w, out_h, out_w = size
  x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
  got = deeplab.upsample_bilinear(x, out_h, out_w)
  want = ref.to_nhwc(F.interpolate(ref.to_nchw(x), size=(out_h, out_w), mode='bilinear',
                                   align_corners=False))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize('height,width', [(64, 64), pytest.param(71, 53, marks=pytest.mark.slow)])
def test_logits_match_torch(torch_model, variables, apply, height, width):
  x = np.random.default_rng(height).uniform(size=(2, height, width, 3)).astype(np.float32)
  logits, features = apply(variables, x, return_features=True)
  with torch.no_grad():
    want = torch_model(ref.to_nchw(x))
  expected = ref.to_nhwc(want['out'])
  assert logits.shape == (2, height, width, 21) and logits.dtype == np.float32
  diff = float(np.abs(np.asarray(logits) - expected).max())
  print(f'{height}x{width}: max |flax - torch| logits = {diff:.2e}, '
        f'torch logits std {expected.std():.2f}')
  assert diff < 1e-4
  # The logits vary over the image (a parity test of near-constant maps would prove little).
  assert expected.std(axis=(1, 2)).mean() > 0.5
  # Strides 8 and 16, with torch's floor arithmetic on odd sizes.
  assert features['aux'].shape[1:] == want['feat_aux'].shape[2:] + (40,)
  assert features['out'].shape[1:] == want['feat_out'].shape[2:] + (960,)
  for name in ('aux', 'out'):
    np.testing.assert_allclose(features[name], ref.to_nhwc(want[f'feat_{name}']), rtol=0,
                               atol=1e-4)


def _write(state, path):
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
  return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('edit,message', [
    (lambda s: s.pop('backbone.13.block.1.0.weight'),
     "missing key 'backbone.13.block.1.0.weight'"),
    (lambda s: s.pop('classifier.0.convs.4.2.running_mean'),
     "missing key 'classifier.0.convs.4.2.running_mean'"),
    (lambda s: s.update({'classifier.4.weight': np.zeros((20, 256, 1, 1), np.float32)}),
     r"key 'classifier.4.weight' has shape \(20, 256, 1, 1\), expected \(21, 256, 1, 1\)"),
    (lambda s: s.update({'backbone.5.block.2.fc1.weight': np.zeros((32, 120), np.float32)}),
     "key 'backbone.5.block.2.fc1.weight' has shape"),
    # 'classifier.' is the segmentation head here: an extra key under it is not ignored.
    (lambda s: s.update({'classifier.5.weight': np.zeros((1,), np.float32)}),
     "unexpected key 'classifier.5.weight'"),
])
def test_bad_files_fail_naming_key_and_file(tmp_path, torch_model, edit, message):
  state = _state(torch_model)
  edit(state)
  path = _write(state, tmp_path / 'bad.safetensors')
  with pytest.raises(ValueError, match=message) as info:
    weights.convert_files(ARCH, path)
  assert path in str(info.value)


def test_aux_head_is_optional_and_ignored(tmp_path, torch_model, variables):
  state = _state(torch_model)
  assert any(k.startswith('aux_classifier.') for k in state)  # the full file converts (fixture)
  without = {k: v for k, v in state.items() if not k.startswith('aux_classifier.')}
  converted = weights.convert_files(ARCH, _write(without, tmp_path / 'noaux.safetensors'))
  jax.tree_util.tree_map(np.testing.assert_array_equal, converted, variables)


@pytest.mark.slow
def test_cli_and_maybe_load_backbone(tmp_path, files, variables):
  pth, _ = files
  out = str(tmp_path / 'out' / 'deeplab.msgpack')
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', f'--arch={ARCH}',
                  f'--input={pth}', f'--output={out}'], cwd=_ROOT, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  loaded = weights.load_variables(out, ARCH)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  shapes = weights.variable_shapes(ARCH)
  for path in (out, pth):
    got = weights.maybe_load_backbone(path, ARCH, shapes)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, variables)


def test_download_goes_to_the_torch_cache(tmp_path, monkeypatch):
  fetched = []

  def fake_urlretrieve(url, path):
    fetched.append(url)
    with open(path, 'wb') as f:
      f.write(b'x')

  monkeypatch.setattr(convert_weights.urllib.request, 'urlretrieve', fake_urlretrieve)
  path = convert_weights.download_torchvision(ARCH, str(tmp_path))
  assert path == str(tmp_path / 'deeplabv3_mobilenet_v3_large-fc3c493d.pth')
  assert convert_weights.download_torchvision(ARCH, str(tmp_path)) == path  # cached
  assert fetched == ['https://download.pytorch.org/models/'
                     'deeplabv3_mobilenet_v3_large-fc3c493d.pth']
