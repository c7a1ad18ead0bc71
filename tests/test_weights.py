"""Weight conversion: strict key/shape checks, the msgpack format, LPIPS parity, the CLI."""

import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch

from pikfix_jax import benchmark
from pikfix_jax import weights
from pikfix_jax.models import backbones
from pikfix_jax.models import lpips
import torch_reference as ref

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def vgg16_torch():
  return ref.randomize(ref.VGG(16), seed=3)


@pytest.fixture(scope='module')
def resnet_state():
  return {k: v.numpy() for k, v in ref.randomize(ref.ResNet34(), seed=1).state_dict().items()}


def _write_safetensors(state, path):
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
  return str(path)


@pytest.mark.parametrize('edit,message', [
    (lambda s: s.pop('layer3.2.bn2.running_var'), "missing key 'layer3.2.bn2.running_var'"),
    (lambda s: s.update({'layer5.0.conv1.weight': np.zeros((1,), np.float32)}),
     "unexpected key 'layer5.0.conv1.weight'"),
    (lambda s: s.update({'layer1.0.conv1.weight': np.zeros((64, 64, 1, 3), np.float32)}),
     "key 'layer1.0.conv1.weight' has shape"),
])
def test_bad_files_fail_naming_key_and_file(tmp_path, resnet_state, edit, message):
  state = dict(resnet_state)
  edit(state)
  path = _write_safetensors(state, tmp_path / 'bad.safetensors')
  with pytest.raises(ValueError, match=message) as info:
    weights.convert_files('resnet34', path)
  assert path in str(info.value)


def test_pth_errors_name_the_file_too(tmp_path, resnet_state):
  state = {k: torch.from_numpy(v) for k, v in resnet_state.items() if k != 'bn1.weight'}
  path = str(tmp_path / 'r.pth')
  torch.save(state, path)
  with pytest.raises(ValueError, match=f"{path}: missing key 'bn1.weight'"):
    weights.convert_files('resnet34', path)


def test_classifier_and_batch_counters_are_ignored(resnet_state):
  assert 'fc.weight' in resnet_state and 'bn1.num_batches_tracked' in resnet_state
  variables = weights.convert_state_dict(resnet_state, weights.variable_shapes('resnet34'))
  np.testing.assert_array_equal(variables['batch_stats']['layer4_0']['downsample_1']['mean'],
                                resnet_state['layer4.0.downsample.1.running_mean'])
  np.testing.assert_array_equal(variables['params']['layer1_0']['conv1']['kernel'],
                                resnet_state['layer1.0.conv1.weight'].transpose(2, 3, 1, 0))


def test_save_load_round_trip_and_validation(tmp_path, resnet_state):
  variables = weights.convert_state_dict(resnet_state, weights.variable_shapes('resnet34'))
  path = str(tmp_path / 'resnet34.msgpack')
  weights.save_variables(path, variables)
  loaded = weights.load_variables(path, 'resnet34')
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(ValueError, match='vgg19'):
    weights.load_variables(path, 'vgg19')
  del variables['params']['layer2_1']['bn2']['scale']
  weights.save_variables(path, variables)
  with pytest.raises(ValueError, match="missing variable 'params/layer2_1/bn2/scale'"):
    weights.load_variables(path, 'resnet34')


def test_maybe_load_backbone(tmp_path, vgg16_torch, caplog):
  model = backbones.VGG(16, ('relu2_2',))
  x = np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  init = model.init(jax.random.PRNGKey(0), x)
  weights._WARNED.discard('vgg16')  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING):
    assert weights.maybe_load_backbone('', 'vgg16', init) is init
    assert weights.maybe_load_backbone('', 'vgg16', init) is init
  assert sum('UNTRAINED' in r.getMessage() for r in caplog.records) == 1
  pth, _ = ref.save_both(vgg16_torch.state_dict(), tmp_path, 'vgg16')
  msgpack = str(tmp_path / 'vgg16.msgpack')
  weights.save_variables(msgpack, weights.convert_files('vgg16', pth))
  for path in (pth, msgpack):
    loaded = weights.maybe_load_backbone(path, 'vgg16', init)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(init)
    # The converted weights change the features, and match torch.
    got = model.apply(loaded, x)['relu2_2']
    assert np.abs(np.asarray(got) - np.asarray(model.apply(init, x)['relu2_2'])).max() > 0.1
    with torch.no_grad():
      want = ref.to_nhwc(vgg16_torch(ref.to_nchw(x))['relu2_2'])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_lpips_matches_torch(tmp_path, vgg16_torch):
  torch_lpips = ref.LPIPS(vgg16_torch).eval()
  with torch.no_grad():
    for l in range(5):  # trained heads are non-negative
      getattr(torch_lpips, f'lin{l}').model[1].weight.uniform_(0.0, 1.0)
  vgg_path, _ = ref.save_both(vgg16_torch.state_dict(), tmp_path, 'vgg16')
  heads_path = str(tmp_path / 'vgg.pth')
  torch.save(torch_lpips.heads_state_dict(), heads_path)
  assert sorted(torch_lpips.heads_state_dict())[0] == 'lin0.model.1.weight'
  variables = weights.convert_files('lpips_vgg', vgg_path, heads_path)
  weights.check_tree(variables, weights.variable_shapes('lpips_vgg'), 'converted')
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1, 1, size=(2, 35, 33, 3)).astype(np.float32)
  x1 = np.clip(x0 + rng.normal(0, 0.3, size=x0.shape), -1, 1).astype(np.float32)
  got = jax.jit(lpips.LPIPS().apply)(variables, x0, x1)
  with torch.no_grad():
    want = torch_lpips(ref.to_nchw(x0), ref.to_nchw(x1)).numpy()
  assert got.shape == (2,)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose((1 + np.array(lpips.SHIFT)) / 2, backbones.IMAGENET_MEAN, atol=1e-7)
  np.testing.assert_allclose(np.array(lpips.SCALE) / 2, backbones.IMAGENET_STD, atol=1e-7)
  # Negative head weights are rejected.
  with torch.no_grad():
    torch_lpips.lin3.model[1].weight[0, 5] = -1.0
  torch.save(torch_lpips.heads_state_dict(), heads_path)
  with pytest.raises(ValueError, match="lin3.model.1.weight"):
    weights.convert_files('lpips_vgg', vgg_path, heads_path)


@pytest.fixture(scope='module')
def lpips_alex_files(tmp_path_factory):
  """A random torch LPIPS-AlexNet and its two files as the package ships them: torchvision's
  alexnet state dict (features.* and classifier.*) and the v0.1 heads (alex.pth)."""
  directory = tmp_path_factory.mktemp('lpips_alex')
  torch_lpips = ref.random_lpips(ref.randomize(ref.AlexNet(), seed=4), seed=5)
  alexnet_path = str(directory / 'alexnet.pth')
  torch.save(torch_lpips.net.state_dict(), alexnet_path)
  heads_path = str(directory / 'alex.pth')
  torch.save(torch_lpips.heads_state_dict(), heads_path)
  return torch_lpips, alexnet_path, heads_path


def test_lpips_alex_matches_torch(lpips_alex_files):
  torch_lpips, alexnet_path, heads_path = lpips_alex_files
  assert any(k.startswith('classifier.') for k in torch_lpips.net.state_dict())  # ignored
  variables = weights.convert_files('lpips_alex', alexnet_path, heads_path)
  weights.check_tree(variables, weights.variable_shapes('lpips_alex'), 'converted')
  assert sorted(variables['params']) == ['lin0', 'lin1', 'lin2', 'lin3', 'lin4', 'net']
  assert sorted(variables['params']['net']) == [f'features_{i}' for i in (0, 10, 3, 6, 8)]
  rng = np.random.default_rng(0)
  for h, w in ((64, 64), (100, 72)):  # 100 and 72 leave remainders at every strided layer
    x0 = rng.uniform(-1, 1, size=(2, h, w, 3)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.3, size=x0.shape), -1, 1).astype(np.float32)
    # The taps: torchvision's layout, pools floored like torch's MaxPool2d(3, 2).
    features = backbones.AlexNet().apply({'params': variables['params']['net']}, (x0 + 1) / 2)
    with torch.no_grad():
      want_features = torch_lpips.net(ref.to_nchw((x0 + 1) / 2))
    assert list(features) == list(backbones.ALEXNET_LAYERS)
    for name, channels in zip(backbones.ALEXNET_LAYERS, (64, 192, 384, 256, 256)):
      want = ref.to_nhwc(want_features[name])
      assert features[name].shape == want.shape and want.shape[-1] == channels
      np.testing.assert_allclose(features[name], want, rtol=1e-4, atol=1e-4)
    got = jax.jit(lpips.LPIPS(net='alex').apply)(variables, x0, x1)
    with torch.no_grad():
      want = torch_lpips(ref.to_nchw(x0), ref.to_nchw(x1)).numpy()
    assert got.shape == (2,) and np.all(want > 0.1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match='at least 31x31'):
    lpips.LPIPS(net='alex').apply(variables, x0[:, :30], x1[:, :30])


@pytest.mark.parametrize('which,edit,message', [
    ('alexnet', lambda s: s.pop('features.10.bias'), "missing key 'features.10.bias'"),
    ('alexnet', lambda s: s.update({'features.3.weight': torch.zeros(192, 64, 3, 3)}),
     r"key 'features.3.weight' has shape \(192, 64, 3, 3\), expected \(192, 64, 5, 5\)"),
    ('heads', lambda s: s.pop('lin4.model.1.weight'), "missing key 'lin4.model.1.weight'"),
    ('heads', lambda s: s.update({'lin2.model.1.weight': torch.ones(1, 256, 1, 1)}),
     r"key 'lin2.model.1.weight' has shape \(1, 256, 1, 1\), expected \(1, 384, 1, 1\)"),
], ids=['alexnet-missing', 'alexnet-shape', 'heads-missing', 'heads-shape'])
def test_lpips_alex_bad_files_fail_naming_key_and_file(tmp_path, lpips_alex_files, which, edit,
                                                       message):
  torch_lpips, alexnet_path, heads_path = lpips_alex_files
  state = torch_lpips.net.state_dict() if which == 'alexnet' else torch_lpips.heads_state_dict()
  state = dict(state)
  edit(state)
  bad = str(tmp_path / f'bad_{which}.pth')
  torch.save(state, bad)
  paths = (bad, heads_path) if which == 'alexnet' else (alexnet_path, bad)
  with pytest.raises(ValueError, match=message) as info:
    weights.convert_files('lpips_alex', *paths)
  assert str(info.value).startswith(f'{bad}: ')
  with pytest.raises(ValueError, match=r'lpips_alex needs .*AlexNet.*alex\.pth'):
    weights.convert_files('lpips_alex', alexnet_path)

@pytest.mark.slow

def test_convert_weights_cli_lpips_alex(tmp_path, lpips_alex_files):
  torch_lpips, alexnet_path, heads_path = lpips_alex_files
  out = str(tmp_path / 'lpips_alex.msgpack')
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', '--arch=lpips_alex',
                  f'--input={alexnet_path}', f'--lpips_heads={heads_path}', f'--output={out}'],
                 cwd=_ROOT, check=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  loaded = weights.load_variables(out, 'lpips_alex')
  state = torch_lpips.state_dict()
  np.testing.assert_array_equal(loaded['params']['net']['features_3']['kernel'],
                                state['net.features.3.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded['params']['lin2']['model_1']['kernel'],
                                state['lin2.model.1.weight'].numpy().transpose(2, 3, 1, 0))
  with pytest.raises(ValueError, match='lpips_vgg'):
    weights.load_variables(out, 'lpips_vgg')


def test_convert_weights_cli(tmp_path, resnet_state):
  path = _write_safetensors(resnet_state, tmp_path / 'resnet34.safetensors')
  out = str(tmp_path / 'out' / 'resnet34.msgpack')
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', '--arch=resnet34',
                  f'--input={path}', f'--output={out}'], cwd=_ROOT, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  loaded = weights.load_variables(out, 'resnet34')
  np.testing.assert_array_equal(loaded['params']['conv1']['kernel'],
                                resnet_state['conv1.weight'].transpose(2, 3, 1, 0))


def test_download_urls_of_lpips_alex(tmp_path, monkeypatch):
  """--download for lpips_alex (no network here): the files it fetches and where it puts them."""
  from data_prep import convert_weights  # pylint: disable=g-import-not-at-top
  fetched = []

  def fake_urlretrieve(url, path):
    fetched.append(url)
    with open(path, 'wb') as f:
      f.write(b'x')

  monkeypatch.setattr(convert_weights.urllib.request, 'urlretrieve', fake_urlretrieve)
  backbone = convert_weights.download_torchvision(
      convert_weights.LPIPS_BACKBONES['lpips_alex'], str(tmp_path))
  heads = convert_weights.download_lpips_heads(str(tmp_path), weights.LPIPS_NETS['lpips_alex'])
  assert backbone == str(tmp_path / 'alexnet-owt-7be5be79.pth') and os.path.exists(backbone)
  assert heads == str(tmp_path / 'lpips_v0.1_alex.pth') and os.path.exists(heads)
  assert fetched == ['https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
                     'https://github.com/richzhang/PerceptualSimilarity/raw/master/'
                     'lpips/weights/v0.1/alex.pth']
  convert_weights.download_lpips_heads(str(tmp_path), 'alex')  # already there: not fetched again
  assert len(fetched) == 2


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc and /proc')
def test_return_freed_memory_shrinks_the_process_after_frees():
  """Memory freed to the C allocator stays in the process (and its RSS) until
  return_freed_memory: 200 MB of freed heap blocks below a live one are handed back."""
  blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]  # malloc'd, not pymalloc
  pin = bytes(2000) + b'x'  # above them on the heap: the heap's top cannot shrink by itself
  del blocks
  before = benchmark.memory_status_bytes('VmRSS')
  weights.return_freed_memory()
  assert before - benchmark.memory_status_bytes('VmRSS') > 150 * 2**20
  del pin
