"""Wan et al.'s face enhancement (pikfix_jax/models/wan_face.py; sec. 3.4, eqs. 16-18) against
a torch transcription of the release (tests/wan_face_reference.py): the converted Flax
generator vs torch in eval mode, torch's resizing and spectral norm, the strict converter
(`--arch=bopbtl_face`), and the release-size key / shape mapping on torch's meta device
(docs/MODEL.md, "Wan et al.: face enhancement")."""

import json
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pikfix_jax import weights
from pikfix_jax.models import wan_face
import tree_checks
import wan_face_reference as ref

KEY = jax.random.PRNGKey(0)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4  # float32 parity bound


def _state(net: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in net.state_dict().items()}


def _tiny(load_size: int, seed: int = 0, mode: str = 'normal'):
  """(torch net, Flax module) of a small generator: ngf 2 (16 ngf = 32 channels), SPADE 8."""
  net = ref.randomize(ref.SPADEGenerator(2, load_size, mode, spade_hidden=8), seed)
  return net, wan_face.FaceGenerator(load_size, ngf=2, num_upsampling_layers=mode,
                                     spade_hidden=8)


# Resampling and spectral norm as torch computes them


@pytest.mark.parametrize('hw_in, hw_out', [((256, 256), (8, 8)), ((100, 97), (3, 6)),
                                           ((7, 17), (13, 5))])
def test_torch_bilinear_matches_torch(hw_in, hw_out):
  x = tree_checks.uniform(0, (2,) + hw_in + (3,), -1.0)
  want = ref.to_nhwc(F.interpolate(ref.to_nchw(x), size=hw_out, mode='bilinear'))
  got = np.asarray(wan_face.torch_bilinear(jnp.asarray(x), *hw_out))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_spectral_conv_matches_torch_train_and_eval():
  """One training step of torch's spectral_norm (a power iteration, then W / sigma) and its
  eval mode (the stored u, v, no iteration): same u, v and outputs."""
  torch.manual_seed(0)
  tconv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(5, 6, 3, padding=1))
  x = tree_checks.uniform(1, (2, 7, 8, 5), -1.0)
  sconv = wan_face.SpectralConv(6, 3)
  variables = sconv.init(KEY, jnp.asarray(x))
  variables = {'params': {'kernel': tconv.weight_orig.detach().numpy().transpose(2, 3, 1, 0),
                          'bias': tconv.bias.detach().numpy()},
               'batch_stats': {'u': tconv.weight_u.numpy().copy(),
                               'v': tconv.weight_v.numpy().copy()}}
  tconv.train()
  want = ref.to_nhwc(tconv(ref.to_nchw(x)))
  got, updates = sconv.apply(variables, jnp.asarray(x), update_stats=True,
                             mutable=['batch_stats'])
  np.testing.assert_allclose(updates['batch_stats']['u'], tconv.weight_u.numpy(), atol=1e-6)
  np.testing.assert_allclose(updates['batch_stats']['v'], tconv.weight_v.numpy(), atol=1e-6)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  tconv.eval()
  variables['batch_stats'] = updates['batch_stats']
  with torch.no_grad():
    want = ref.to_nhwc(tconv(ref.to_nchw(x)))
  got = sconv.apply(variables, jnp.asarray(x))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  folded = wan_face.fold_spectral_norm(variables)
  np.testing.assert_allclose(folded['params']['kernel'],
                             tconv.weight.detach().numpy().transpose(2, 3, 1, 0), atol=1e-6)


# Converted generator vs the torch transcription (eval mode)


@pytest.mark.parametrize('load_size', [100, pytest.param(96, marks=pytest.mark.slow)])
def test_generator_matches_torch(load_size):
  """load_size 100: an odd 3 x 3 start (100 // 32, the release's floor), a 96 x 96 output
  from a 100 x 100 face, every resize of the face non-integer; 96: the same with exact
  factors."""
  net, module = _tiny(load_size)
  variables = weights.convert_face_generator(_state(net), 'tiny', module)
  face = tree_checks.uniform(2, (2, load_size, load_size, 3))
  want = ref.run(net, face)
  got = np.asarray(jax.jit(module.apply)(variables, jnp.asarray(face)))
  assert got.shape == want.shape == (2, 96, 96, 3)
  assert want.std() > 0.05  # off the tanh's saturation, so the comparison means something
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_converter_strict_and_counters_optional():
  net, module = _tiny(64)
  state = _state(net)
  full = weights.convert_face_generator(state, 'a.pth', module)
  no_counters = {k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}
  tree_checks.assert_same_tree(weights.convert_face_generator(no_counters, 'a.pth', module), full)
  face = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  tree_checks.assert_same_tree(full, jax.eval_shape(module.init, KEY, face))

  missing = dict(state)
  del missing['up_1.conv_s.weight_v']
  with pytest.raises(ValueError, match=r"a\.pth: missing key 'up_1\.conv_s\.weight_v'"):
    weights.convert_face_generator(missing, 'a.pth', module)
  extra = dict(state, **{'up_1.conv_0.weight': state['up_1.conv_0.weight_orig']})
  with pytest.raises(ValueError, match=r"a\.pth: unexpected key 'up_1\.conv_0\.weight'"):
    weights.convert_face_generator(extra, 'a.pth', module)
  stray_counter = dict(state, **{'fc.num_batches_tracked': np.array(3)})
  with pytest.raises(ValueError, match="unexpected key 'fc.num_batches_tracked'"):
    weights.convert_face_generator(stray_counter, 'a.pth', module)
  bad = dict(state, **{'head_0.norm_0.mlp_gamma.weight': np.zeros((32, 8, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"a\.pth: key 'head_0\.norm_0\.mlp_gamma\.weight' has "
                     r"shape \(32, 8, 1, 1\), expected \(32, 8, 3, 3\)"):
    weights.convert_face_generator(bad, 'a.pth', module)
  zero_u = dict(state, **{'head_0.conv_0.weight_u': np.zeros_like(state['head_0.conv_0.weight_u'])})
  with pytest.raises(ValueError, match='a.pth: head_0/conv_0: spectral norm sigma'):
    weights.convert_face_generator(zero_u, 'a.pth', module)


def test_release_keys_and_shapes_on_meta_device():
  """The release-size generator (ngf 64, SPADE 128): the transcription's state dict on torch's
  meta device (nothing allocated) has exactly the keys and shapes the converter expects, and
  92,059,587 parameters (the paper's "92.1M") in torch and in Flax."""
  net = ref.release_generator(device='meta')
  state = net.state_dict()
  # pylint: disable-next=protected-access
  expected, bn_modules = weights._face_expected_keys(64, 'normal', 128)
  torch_shape = lambda s: tuple(s[i] for i in (3, 2, 0, 1)) if len(s) == 4 else tuple(s)
  want = {k: torch_shape(shape) for k, (_, shape) in expected.items()}
  got = {k: tuple(v.shape) for k, v in state.items() if not k.endswith('num_batches_tracked')}
  assert got == want
  counters = {k.rsplit('.', 1)[0] for k in state if k.endswith('num_batches_tracked')}
  assert counters == bn_modules and len(counters) == 2 * 7 + 4  # 7 blocks, 4 shortcuts
  assert sum(k.endswith('weight_orig') for k in state) == 2 * 7 + 4
  flax_params = sum(int(np.prod(shape)) for path, shape in expected.values()
                    if path[0] == 'params')
  assert flax_params == sum(p.numel() for p in net.parameters()) == 92_059_587


# Slow: release size, the command line, training mode, the discriminator


@pytest.mark.slow
def test_generator_matches_torch_at_release_width():
  """ngf 64 and SPADE 128 (every release layer at its width) on 64 x 64 faces (2 x 2 start)."""
  net = ref.randomize(ref.SPADEGenerator(64, 64), 3)
  module = wan_face.FaceGenerator(load_size=64)
  variables = weights.convert_face_generator(_state(net), 'release-width', module)
  face = tree_checks.uniform(4, (1, 64, 64, 3))
  want = ref.run(net, face)
  got = np.asarray(jax.jit(module.apply)(variables, jnp.asarray(face)))
  assert want.std() > 0.05
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


@pytest.mark.slow
def test_convert_command_on_fake_release(tmp_path):
  """`--arch=bopbtl_face` on both released checkpoints (random, release size, without
  num_batches_tracked): the face size comes from the folder name and is written beside the
  weights; the result loads strictly as the right variant; spectral norms are folded with the
  saved u, v."""
  from data_prep import convert_weights  # pylint: disable=g-import-not-at-top
  paths = ref.write_fake_release(str(tmp_path / 'checkpoints'), without_counters=True)
  out = tmp_path / 'weights'
  subprocess.run([sys.executable, '-m', 'data_prep.convert_weights', '--arch=bopbtl_face',
                  f'--input={paths[256]}', f'--output={out}'], check=True, cwd=REPO,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  outputs = {256: str(out / 'bopbtl_face_256.msgpack'),
             512: convert_weights.convert_face(paths[512], str(out / 'hr.msgpack'))}
  assert outputs[512] == str(out / 'hr.msgpack')
  for size, path in paths.items():
    meta = json.loads(open(weights.face_meta_path(outputs[size])).read())
    assert (meta['arch'], meta['load_size'], meta['ngf']) == ('bopbtl_face', size, 64)
    module, variables = weights.load_face_generator(outputs[size])
    assert module.load_size == size and module.start_size() == size // 32
    assert meta['fingerprint'] == weights.fingerprint(variables)
    state = torch.load(path, weights_only=True)
    w, u, v = (state[f'up_3.conv_1.weight_{n}'].double() for n in ('orig', 'u', 'v'))
    want = (w / torch.dot(u, w.reshape(w.shape[0], -1) @ v)).numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(variables['params']['up_3']['conv_1']['kernel'], want, rtol=1e-6)
  with pytest.raises(Exception, match='pass --load_size'):
    convert_weights.convert_face(str(tmp_path / 'elsewhere' / 'latest_net_G.pth'), str(out))


@pytest.mark.slow
def test_training_form_updates_and_gradients():
  """spectral_norm=True with train=True: batch statistics and one power iteration per call,
  stored in 'batch_stats'; a gradient reaches every parameter; in eval mode the training form
  equals its folded default form."""
  module = wan_face.FaceGenerator(load_size=64, ngf=2, spade_hidden=8, spectral_norm=True)
  face = jnp.asarray(tree_checks.uniform(0, (2, 64, 64, 3)))
  variables = jax.jit(module.init)(KEY, face)
  out, updates = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, face)
  assert out.shape == (2, 64, 64, 3)
  before = flax.traverse_util.flatten_dict(variables['batch_stats'], sep='/')
  after = flax.traverse_util.flatten_dict(updates['batch_stats'], sep='/')
  assert all(not np.allclose(before[k], after[k]) for k in before), 'a statistic did not move'
  trained = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
  plain = module.clone(spectral_norm=False)
  np.testing.assert_allclose(plain.apply(wan_face.fold_spectral_norm(trained), face),
                             module.apply(trained, face), rtol=0, atol=1e-5)

  def loss(params):
    y, _ = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, face,
                        train=True, mutable=['batch_stats'])
    return jnp.mean((y - 0.5) ** 2)

  tree_checks.assert_every_gradient_nonzero(jax.jit(jax.grad(loss))(variables['params']), 'G_f')


@pytest.mark.slow
def test_discriminator_shapes_features_and_spectral_state():
  d = wan_face.FaceDiscriminator(features=8)
  x = jnp.asarray(tree_checks.uniform(0, (2, 64, 64, 3)))
  variables = d.init(KEY, x)
  outputs = d.apply(variables, x)
  assert len(outputs) == 2
  for logits, features in outputs:
    assert logits.shape[-1] == 1 and len(features) == 4
  assert [f.shape[-1] for f in outputs[0][1]] == [8, 16, 32, 64]
  # padding 2 (SPADE's ceil(3 / 2)): 64 -> 33, 17, 9, 10, 11; the 32 x 32 scale -> 7
  assert outputs[0][0].shape == (2, 11, 11, 1) and outputs[1][0].shape == (2, 7, 7, 1)
  _, updates = d.apply(variables, x, train=True, mutable=['batch_stats'])
  u0 = variables['batch_stats']['scale0']['conv1']['u']
  assert not np.allclose(updates['batch_stats']['scale0']['conv1']['u'], u0)
  conditional = d.apply(d.init(KEY, x, x), x, x)
  assert conditional[0][0].shape == outputs[0][0].shape
  params = jax.eval_shape(wan_face.FaceDiscriminator().init, KEY,
                          jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32))['params']
  assert tree_checks.count(params) == 2 * 2_763_841
