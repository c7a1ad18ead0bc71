"""Parity of the Flax backbones with torchvision-layout PyTorch modules (random weights)."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pikfix_jax import weights
from pikfix_jax.models import backbones
import torch_reference as ref


def _convert_both(model, tmp_path, arch):
  """Saves the torch weights as .pth and .safetensors, converts both, checks they agree."""
  pth, st = ref.save_both(model.state_dict(), tmp_path, arch)
  from_pth = weights.convert_files(arch, pth)
  from_st = weights.convert_files(arch, st)
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_pth, from_st)
  return from_pth


def _assert_close(flax_out, torch_out, names):
  for name in names:
    want = ref.to_nhwc(torch_out[name])
    got = np.asarray(flax_out[name])
    assert got.shape == want.shape, name
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_resnet34_matches_torch(tmp_path):
  torch_model = ref.randomize(ref.ResNet34(), seed=0)
  variables = _convert_both(torch_model, tmp_path, 'resnet34')
  model = backbones.ResNet34()
  apply = jax.jit(model.apply)
  rng = np.random.default_rng(0)
  for shape in [(2, 32, 32, 3), (1, 37, 45, 3)]:  # odd sizes: pool/conv padding and strides
    x = rng.uniform(size=shape).astype(np.float32)
    with torch.no_grad():
      want = torch_model(ref.to_nchw(x))
    got = apply(variables, x)
    assert set(got) == {'layer1', 'layer2', 'layer3', 'layer4'}
    _assert_close(got, want, got)


@pytest.mark.parametrize('depth,outputs,shape', [
    (19, ('relu1_2', 'relu2_2', 'relu3_2', 'relu3_4', 'relu4_2', 'relu5_2', 'relu5_4'),
     (1, 37, 45, 3)),
    (16, ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3'), (2, 33, 32, 3)),
])
def test_vgg_matches_torch(tmp_path, depth, outputs, shape):
  torch_model = ref.randomize(ref.VGG(depth), seed=depth)
  variables = _convert_both(torch_model, tmp_path, f'vgg{depth}')
  x = np.random.default_rng(1).uniform(size=shape).astype(np.float32)
  with torch.no_grad():
    want = torch_model(ref.to_nchw(x))
  got = jax.jit(backbones.VGG(depth=depth, outputs=outputs).apply)(variables, x)
  assert set(got) == set(outputs)
  _assert_close(got, want, outputs)


def test_vgg_input_gradient_matches_torch(tmp_path):
  """The perceptual loss differentiates VGG by its input: the reshape-max pools
  (layers.max_pool_tiles) pass the same gradient as torch's max_pool2d, odd sizes included."""
  torch_model = ref.randomize(ref.VGG(19), seed=3)
  variables = _convert_both(torch_model, tmp_path, 'vgg19')
  rng = np.random.default_rng(2)
  x = rng.uniform(size=(2, 37, 34, 3)).astype(np.float32)
  outputs = ('relu2_2', 'relu3_2')
  weights_out = {n: rng.normal(size=s).astype(np.float32) for n, s in
                 (('relu2_2', (2, 18, 17, 128)), ('relu3_2', (2, 9, 8, 256)))}
  tx = ref.to_nchw(x).requires_grad_()
  got_torch = torch_model(tx)
  sum(torch.sum(got_torch[n] * torch.tensor(weights_out[n].transpose(0, 3, 1, 2)))
      for n in outputs).backward()
  model = backbones.VGG(depth=19, outputs=outputs)
  grad = jax.grad(lambda x: sum(jnp.sum(model.apply(variables, x)[n] * weights_out[n])
                                for n in outputs))(x)
  want = tx.grad.numpy().transpose(0, 2, 3, 1)
  assert float(np.abs(want).max()) > 0
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_vgg_builds_only_up_to_the_deepest_output():
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(backbones.VGG(19, ('relu2_2',)).init, jax.random.PRNGKey(0), x)
  assert sorted(variables['params']) == ['features_0', 'features_2', 'features_5', 'features_7']
  with pytest.raises(ValueError, match='relu5_4'):
    backbones.VGG(16, ('relu5_4',)).init(jax.random.PRNGKey(0), x)


def test_parameter_names_follow_torchvision():
  shapes = weights.variable_shapes('resnet34')
  assert shapes['params']['layer2_0']['downsample_0']['kernel'].shape == (1, 1, 64, 128)
  assert shapes['batch_stats']['layer2_0']['downsample_1']['var'].shape == (128,)
  assert weights.torch_key(('layer1_0', 'conv1', 'kernel')) == 'layer1.0.conv1.weight'
  assert weights.torch_key(('bn1', 'mean')) == 'bn1.running_mean'
  keys = {weights.torch_key(p) for _, *p in traverse_util.flatten_dict(shapes)}
  torch_keys = {k for k in ref.ResNet34().state_dict()
                if not k.startswith('fc.') and not k.endswith('num_batches_tracked')}
  assert keys == torch_keys


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32():
  model32 = backbones.ResNet34()
  model16 = backbones.ResNet34(dtype=jnp.bfloat16)
  x = np.random.default_rng(2).uniform(size=(1, 32, 32, 3)).astype(np.float32)
  variables = model32.init(jax.random.PRNGKey(0), x)
  assert variables['params']['conv1']['kernel'].dtype == jnp.float32
  f32 = model32.apply(variables, x)['layer4']
  bf16 = model16.apply(variables, x)['layer4']
  assert bf16.dtype == jnp.bfloat16
  err = np.abs(np.asarray(bf16, np.float32) - np.asarray(f32))
  assert err.mean() < 0.05 * np.abs(np.asarray(f32)).mean()


def test_imagenet_normalize():
  x = jnp.asarray(backbones.IMAGENET_MEAN)[None]
  np.testing.assert_allclose(backbones.imagenet_normalize(x), 0.0, atol=1e-7)
