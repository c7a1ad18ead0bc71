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


def test_rotate_hue_matches_skimage_lab_rotation_and_keeps_lightness():
  rgb = skdata.coffee()[::8, ::8].astype(np.float32) / 255.0
  lab = skcolor.rgb2lab(rgb)
  theta = np.deg2rad(100.0)
  a, b = lab[..., 1], lab[..., 2]
  turned = np.stack([lab[..., 0], np.cos(theta) * a - np.sin(theta) * b,
                     np.sin(theta) * a + np.cos(theta) * b], axis=-1)
  expected = np.clip(skcolor.lab2rgb(turned), 0, 1)
  out = np.asarray(color.rotate_hue(jnp.asarray(rgb), 100.0))
  # Pixels the rotation keeps inside the gamut: same colour, same lightness, hue + 100 deg.
  in_gamut = np.all((skcolor.lab2rgb(turned) > 0.002) & (skcolor.lab2rgb(turned) < 0.998), -1)
  assert in_gamut.mean() > 0.3
  np.testing.assert_allclose(out[in_gamut], expected[in_gamut], atol=2e-3)
  out_lab = skcolor.rgb2lab(out)
  np.testing.assert_allclose(out_lab[in_gamut][:, 0], lab[in_gamut][:, 0], atol=0.1)
  chroma = np.hypot(a, b) > 10
  hue = np.degrees(np.arctan2(out_lab[..., 2], out_lab[..., 1]) - np.arctan2(b, a)) % 360
  assert np.all(np.abs(hue[in_gamut & chroma] - 100.0) < 1.0)
  np.testing.assert_allclose(np.asarray(color.rotate_hue(jnp.asarray(rgb), 0.0)), rgb, atol=1e-3)
  np.testing.assert_allclose(np.asarray(color.rotate_ab(jnp.array([[1.0, 0.0]]), 90.0)),
                             [[0.0, 1.0]], atol=1e-6)
