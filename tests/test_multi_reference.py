"""Several references at once (Pik-Fix): the warp attends over every position of every
reference, centred together (ops/warp.py, docs/MODEL.md "Several references")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data as skdata

from conftest import tiny_config
from pikfix_jax import artifacts
from pikfix_jax import inference
from pikfix_jax import models
from pikfix_jax.models import pikfix
from pikfix_jax.ops import warp


def _textbook_warp(q, k, v, temperature):
  """NumPy float64: centred cosine similarity (eq. 2) of q to k, softmax over k, @ v."""
  def centre(x):
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.sqrt((x ** 2).sum(-1, keepdims=True) + 1e-12)
  sim = np.einsum('bqc,bkc->bqk', centre(q), centre(k))
  w = np.exp((sim - sim.max(-1, keepdims=True)) / temperature)
  w /= w.sum(-1, keepdims=True)
  return np.einsum('bqk,bkv->bqv', w, v), sim.max(-1)[..., None]


def test_several_references_are_one_jointly_centred_key_set():
  """Equals a hand-built concatenation of keys and values centred by the mean over all
  references' positions, in the chunked path too; and it is not per-reference centring (the
  references here differ in their mean feature, so the two choices differ)."""
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 40, 8))
  k1, k2 = rng.normal(size=(2, 24, 8)), rng.normal(size=(2, 10, 8)) + 1.5
  v1, v2 = rng.uniform(size=(2, 24, 5)), rng.uniform(size=(2, 10, 5))
  t = 0.1
  want, want_conf = _textbook_warp(q, np.concatenate([k1, k2], 1), np.concatenate([v1, v2], 1), t)
  f32 = lambda *xs: [jnp.asarray(x, jnp.float32) for x in xs]
  for chunk in (64, 16):  # whole, and 3 chunks (the last padded)
    got, conf = warp.warp_histogram(*f32(q), f32(k1, k2), f32(v1, v2), t, chunk=chunk)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(conf, want_conf, atol=2e-5)

  # Per-reference centring would be another model: it moves the output by far more than rounding.
  def centred_alone(k):
    return k - k.mean(axis=1, keepdims=True) + 0.0
  other, _ = _textbook_warp(q, np.concatenate([centred_alone(k1), centred_alone(k2)], 1),
                            np.concatenate([v1, v2], 1), t)
  assert np.abs(other - want).max() > 0.05


def test_a_key_repeated_with_other_values_averages_them():
  """Two references with the same features and different colours: each input position gets
  the mean of the two colours it would get from either alone (equal softmax weights)."""
  rng = np.random.default_rng(1)
  q, k = rng.normal(size=(1, 30, 8)), rng.normal(size=(1, 20, 8))
  v1, v2 = rng.uniform(size=(1, 20, 4)), rng.uniform(size=(1, 20, 4))
  f = lambda x: jnp.asarray(x, jnp.float32)
  both, _ = warp.warp_histogram(f(q), [f(k), f(k)], [f(v1), f(v2)], 0.05)
  alone = [warp.warp_histogram(f(q), f(k), f(v), 0.05)[0] for v in (v1, v2)]
  np.testing.assert_allclose(both, (alone[0] + alone[1]) / 2, atol=1e-5)


@pytest.fixture(scope='module')
def tiny_model():
  model = pikfix.build_generator(tiny_config().model)
  l = jax.random.uniform(jax.random.PRNGKey(1), (1, 64, 64, 1))
  variables = models.jit_init(model.init)(jax.random.PRNGKey(0), l[:, :32, :32],
                                          jnp.zeros((1, 32, 32, 3)))
  return model, variables, l


@pytest.mark.slow
def test_model_with_several_references(tiny_model):
  """A reference given twice is that reference (every output); the order of references does
  not matter; a second, different reference changes the colours. References of different
  sizes are fine (each is its own key set)."""
  model, variables, l = tiny_model
  a = jnp.asarray(skdata.coffee()[:256:4, :256:4] / 255.0, jnp.float32)[None]  # 64 x 64
  b = jnp.asarray(skdata.astronaut()[:128:4, :256:4] / 255.0, jnp.float32)[None]  # 32 x 64
  apply = jax.jit(model.apply)
  one, twice = apply(variables, l, a), apply(variables, l, (a, a))
  for name in ('rgb', 'ab', 'reference_hist'):
    np.testing.assert_allclose(twice[name], one[name], atol=1e-5, err_msg=name)
  for i in one['warped']:
    np.testing.assert_allclose(twice['warped'][i], one['warped'][i], atol=1e-5)
    np.testing.assert_allclose(twice['confidence'][i], one['confidence'][i], atol=1e-5)
  ab, ba = apply(variables, l, (a, b)), apply(variables, l, (b, a))
  np.testing.assert_allclose(ab['ab'], ba['ab'], atol=1e-5)
  assert np.abs(np.asarray(ab['warped'][1]) - np.asarray(one['warped'][1])).max() > 1e-3


class _Echo(inference.PhotoRestorer):
  """A restorer that returns the input grey: only the reference handling is under test."""

  def restore_padded(self, l, reference):
    self.seen = reference
    return {'rgb': jnp.repeat(l, 3, axis=-1)}


def test_restorers_taking_one_reference_refuse_several():
  image, ref = np.full((40, 40, 3), 0.5, np.float32), np.zeros((50, 70, 3), np.float32)
  echo = _Echo(reference_size=64)
  echo(image, [ref])  # a list of one is that reference
  assert echo.seen.shape == (1, 32, 64, 3)
  with pytest.raises(artifacts.RestoreError, match='2 references given'):
    echo(image, [ref, ref])
  echo.multi_reference = True
  echo(image, [ref, ref[:30]])
  assert [r.shape[1:3] for r in echo.seen] == [(32, 64), (32, 64)]


@pytest.mark.slow
def test_restore_reference_is_repeatable(tmp_path, initial_workdir):
  """`restore --reference=A --reference=A` writes what `--reference=A` writes; two different
  references give another colouring; the compare image shows both references."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from pikfix_jax import restore  # pylint: disable=g-import-not-at-top
  from pikfix_jax import restoring  # pylint: disable=g-import-not-at-top
  Image.fromarray(skdata.astronaut()[::8, ::8]).convert('L').save(tmp_path / 'in.png')
  Image.fromarray(skdata.coffee()[::8, ::8]).save(tmp_path / 'a.png')
  Image.fromarray(skdata.rocket()[::8, ::8]).save(tmp_path / 'b.png')
  outs = {}
  for name, refs in (('one', ['a']), ('twice', ['a', 'a']), ('two', ['a', 'b'])):
    options = restoring.Options(input=str(tmp_path / 'in.png'), output=str(tmp_path / f'{name}.png'),
                              workdir=initial_workdir, reference_size=64, compare=True,
                              reference=[str(tmp_path / f'{r}.png') for r in refs])
    code, results = restore.run(options)
    assert code == 0 and not results[0].error
    outs[name] = np.asarray(Image.open(tmp_path / f'{name}.png'), np.int32)
  assert np.abs(outs['twice'] - outs['one']).max() <= 1  # float rounding at most one level
  assert np.abs(outs['two'] - outs['one']).max() > 1
  with Image.open(tmp_path / 'two_compare.png') as im:
    assert im.size[0] > 4 * 64  # input | a | b | output
