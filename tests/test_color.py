import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor
from skimage import data as skdata

from pikfix_jax.ops import color


@pytest.mark.parametrize('name', ['astronaut', 'coffee'])
def test_lab_matches_skimage_and_round_trips(name):
  rgb = getattr(skdata, name)()[::2, ::2].astype(np.float32) / 255.0
  lab = np.asarray(color.rgb_to_lab(jnp.asarray(rgb)))
  ref = skcolor.rgb2lab(rgb)
  assert np.max(np.abs(lab[..., 0] - ref[..., 0])) < 0.05
  assert np.max(np.abs(lab[..., 1:] - ref[..., 1:])) < 0.1
  back = np.asarray(color.lab_to_rgb(jnp.asarray(lab)))
  assert np.max(np.abs(back - rgb)) < 1e-3
  np.testing.assert_allclose(np.asarray(color.lab_to_rgb(jnp.asarray(ref))),
                             skcolor.lab2rgb(ref), atol=1e-3)


def test_normalisation_ranges_and_inverse():
  rgb = jax.random.uniform(jax.random.PRNGKey(0), (4, 5, 3))
  l, ab = color.rgb_to_lab_normalized(rgb)
  assert l.shape == (4, 5, 1) and ab.shape == (4, 5, 2)
  assert float(l.min()) >= 0 and float(l.max()) <= 1
  assert float(jnp.abs(ab).max()) <= 1
  np.testing.assert_allclose(color.lab_normalized_to_rgb(l, ab), rgb, atol=1e-3)
  grey = color.gray_to_rgb(l)
  np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-4)
  np.testing.assert_allclose(color.rgb_to_lab_normalized(grey)[0], l, atol=1e-3)


@pytest.mark.parametrize('value', [0.0, 1.0])
def test_gradients_finite_at_black_and_white(value):
  rgb = jnp.full((2, 2, 3), value)
  g = jax.grad(lambda x: jnp.sum(color.rgb_to_lab(x)))(rgb)
  assert np.all(np.isfinite(g))
  lab = color.rgb_to_lab(rgb)
  g = jax.grad(lambda x: jnp.sum(color.lab_to_rgb(x)))(lab)
  assert np.all(np.isfinite(g))
