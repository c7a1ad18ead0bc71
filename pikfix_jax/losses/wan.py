"""Losses of Wan et al. 2020 ("Old Photo Restoration via Deep Latent Space Translation", TPAMI),
as functions; the networks are in `models/wan.py`, docs/MODEL.md "Wan et al. 2020: networks".

Stage 1, VAE1 (eqs. 2-4) per domain r or x: KL_WEIGHT * kl_divergence(mu)
  + RECON_WEIGHT * common.l1(recon, image) + lsgan_generator_loss(D(recon)); the latent GAN:
  latent_discriminator_loss(D_RX(z_r), D_RX(z_x)) for D_RX, latent_generator_loss(D_RX(z_r))
  for E_RX. VAE2 the same without the latent GAN.
Stage 2, mapping T (eq. 5): LATENT_L1_WEIGHT * common.l1(T(z_x), z_y) + lsgan_generator_loss(D_T(.))
  + FEATURE_MATCHING_WEIGHT * (feature_matching_loss + vgg_feature_matching_loss) (eq. 6).
Scratch detection (eqs. 11-15): detection_loss = weighted_bce + FOCAL_WEIGHT * focal_loss.
"""

from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from pikfix_jax.losses import common
from pikfix_jax.ops import color

# Sec. 4.1: "we empirically set the parameters in Equations (2) and (5) with alpha = 10,
# lambda_1 = 60 and lambda_2 = 10".
RECON_WEIGHT = 10.0  # alpha, eq. 2: the VAE's L1 reconstruction
LATENT_L1_WEIGHT = 60.0  # lambda_1, eq. 5: |T(z_x) - z_y|_1 (release: --l2_feat 60 --use_l1_feat)
FEATURE_MATCHING_WEIGHT = 10.0  # lambda_2, eq. 5: L_FM of eq. 6 (the release's lambda_feat 10)
KL_WEIGHT = 1.0  # eq. 2 (unit weight; the release's --kl 1)
FOCAL_GAMMA = 0.2  # gamma, eq. 13
FOCAL_WEIGHT = 10.0  # beta, eq. 15
# Eq. 6's VGG term as the release computes it (networks.VGGLoss_torch): VGG-19 relu1_1 .. relu5_1,
# L1 averaged per layer, layer weights 1/32 .. 1.
VGG_LAYERS = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
VGG_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def _f32(x: jnp.ndarray) -> jnp.ndarray:
  return x.astype(jnp.float32)


def kl_divergence(mu: jnp.ndarray, logvar: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """KL(E(z|x) || N(0, I)) of eq. 2, averaged over latent elements.

  logvar None (the release's VAE, posterior N(mu, I)): mean(mu^2), exactly the release's
  `loss_G_kl = mean(hiddens^2) * kl` (twice the per-element KL 0.5 mu^2, a constant factor).
  With a logvar: mean(0.5 (mu^2 + exp(logvar) - 1 - logvar)), the Gaussian KL per element."""
  mu = _f32(mu)
  if logvar is None:
    return jnp.mean(jnp.square(mu))
  logvar = _f32(logvar)
  return jnp.mean(0.5 * (jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar))


def _logits_list(logits) -> list:
  """A logit map, or `MultiscaleDiscriminator`'s [(logits, features), ...] -> [logits, ...]."""
  if isinstance(logits, (list, tuple)):
    return [o[0] if isinstance(o, (list, tuple)) else o for o in logits]
  return [logits]


def lsgan_loss(logits, target: float) -> jnp.ndarray:
  """mean((D - target)^2), summed over scales for a multi-scale D (the release's GANLoss)."""
  return sum(jnp.mean(jnp.square(_f32(l) - target)) for l in _logits_list(logits))


def lsgan_discriminator_loss(real_logits, fake_logits) -> jnp.ndarray:
  """D's LSGAN loss (Mao et al. 2017): E[(D(real) - 1)^2] + E[D(fake)^2] (the form of eq. 3)."""
  return lsgan_loss(real_logits, 1.0) + lsgan_loss(fake_logits, 0.0)


def lsgan_generator_loss(fake_logits) -> jnp.ndarray:
  """G's LSGAN loss: E[(D(G(.)) - 1)^2] (L_{VAE,GAN} of eq. 2, L_{T,GAN} of eq. 5)."""
  return lsgan_loss(fake_logits, 1.0)


def latent_discriminator_loss(logits_r: jnp.ndarray, logits_x: jnp.ndarray) -> jnp.ndarray:
  """Eq. 3, D_{R,X}'s side: E_x[D(E(x))^2] + E_r[(1 - D(E(r)))^2] (real old photos' codes
  labelled 1, synthetic ones 0)."""
  return lsgan_loss(logits_r, 1.0) + lsgan_loss(logits_x, 0.0)


def latent_generator_loss(logits_r: jnp.ndarray) -> jnp.ndarray:
  """Eq. 4's encoder side, "a contradictory loss": E_r[D(E(r))^2], the real photos' codes pushed
  to D's synthetic label. Only r's codes move, as in the release (`loss_G_featD`: old photos'
  latents made to pass for synthetic ones, whose space the mapping T is trained on)."""
  return lsgan_loss(logits_r, 0.0)


def feature_matching_loss(fake_outputs: Sequence, real_outputs: Sequence,
                          layer_weight: Optional[float] = None) -> jnp.ndarray:
  """Eq. 6's discriminator term: sum_i 1/n_i |phi_i(fake) - phi_i(real)|_1 over D's
  intermediate layers (not the logits), weighted as the release (pix2pixHD): 4 / (layers + 1)
  per layer (`layer_weight` None; SPADE's, the face network's: 1), 1 / num_D per scale.
  Arguments: `MultiscaleDiscriminator` outputs, [(logits, features), ...]; the real features
  are constants (stop_gradient)."""
  num_d = len(fake_outputs)
  total = 0.0
  for (_, fake), (_, real) in zip(fake_outputs, real_outputs):
    # len(features) = n_layers_D + 1
    weight = 4.0 / len(fake) if layer_weight is None else layer_weight
    for f, r in zip(fake, real):
      total = total + weight / num_d * common.l1(f, jax.lax.stop_gradient(r))
  return total


def vgg_loss(vgg_features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]],
             output_rgb: jnp.ndarray, target_rgb: jnp.ndarray,
             layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
             layer_names: Sequence[str] = VGG_LAYERS) -> jnp.ndarray:
  """The release's VGG loss (networks.VGGLoss; SPADE's): sum_i w_i mean|phi_i(out) -
  phi_i(target)| on VGG-19 relu1_1 .. relu5_1 of sRGB images in [0, 1]
  (`backbones.VGG(19, outputs=VGG_LAYERS)`, which applies ImageNet normalisation). The
  target's pass is constant."""
  target = jax.lax.stop_gradient(vgg_features(target_rgb))
  out = vgg_features(output_rgb)
  return sum(w * common.l1(out[n], target[n]) for w, n in zip(layer_weights, layer_names))


def vgg_feature_matching_loss(vgg_features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]],
                              output_l: jnp.ndarray, target_l: jnp.ndarray,
                              layer_weights: Sequence[float] = VGG_LAYER_WEIGHTS,
                              layer_names: Sequence[str] = VGG_LAYERS) -> jnp.ndarray:
  """Eq. 6's VGG term: `vgg_loss` of the L images, each shown as its grey sRGB image
  (`color.gray_to_rgb`)."""
  return vgg_loss(vgg_features, color.gray_to_rgb(jnp.clip(output_l, 0.0, 1.0)),
                  color.gray_to_rgb(target_l), layer_weights, layer_names)


def positive_fraction(target: jnp.ndarray) -> jnp.ndarray:
  """Eq. 12 as printed: alpha_i = |y_i = 1| / (|y_i = 1| + |y_i = 0|), per image, (B, 1, 1, 1)."""
  return jnp.mean(_f32(target > 0.5), axis=(1, 2, 3), keepdims=True)


def weighted_bce(logits: jnp.ndarray, target: jnp.ndarray,
                 alpha: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Eq. 11: alpha * -y log y^ + (1 - alpha) * -(1 - y) log(1 - y^), from logits, averaged over
  pixels and images (eq. 11 sums over pixels: a constant factor, the same for eq. 13, so
  beta keeps its meaning).

  `alpha` None: computed per image on the fly as the fraction of NEGATIVE pixels,
  1 - `positive_fraction`, so the rare scratch pixels get the large weight, which is what the
  text asks ("to remedy the imbalance"); eq. 12 as printed (the positive fraction) would shrink
  them further. Pass `alpha=positive_fraction(target)` for the literal eq. 12, or a constant.
  The weight is not differentiated."""
  logits, target = _f32(logits), _f32(target)
  if alpha is None:
    alpha = 1.0 - positive_fraction(target)
  alpha = jax.lax.stop_gradient(jnp.asarray(alpha, jnp.float32))
  pos = -target * jax.nn.log_sigmoid(logits)
  neg = -(1.0 - target) * jax.nn.log_sigmoid(-logits)
  return jnp.mean(alpha * pos + (1.0 - alpha) * neg)


def focal_loss(logits: jnp.ndarray, target: jnp.ndarray, gamma: float = FOCAL_GAMMA
               ) -> jnp.ndarray:
  """Eqs. 13-14: -(1 - p)^gamma log p, p = y^ where y = 1 else 1 - y^ (binary targets),
  averaged over pixels. (1 - p)^gamma is exp(gamma log sigmoid(-s z)), s = 2y - 1: finite
  gradients even where p rounds to 1 (x^0.2 has an infinite slope at 0)."""
  logits, target = _f32(logits), _f32(target)
  signed = jnp.where(target > 0.5, logits, -logits)
  log_p, log_not_p = jax.nn.log_sigmoid(signed), jax.nn.log_sigmoid(-signed)
  return jnp.mean(-jnp.exp(gamma * log_not_p) * log_p)


def detection_loss(logits: jnp.ndarray, target: jnp.ndarray, alpha: Optional[jnp.ndarray] = None,
                   gamma: float = FOCAL_GAMMA, beta: float = FOCAL_WEIGHT) -> jnp.ndarray:
  """Eq. 15: L_Seg = L_CE + beta L_FL (gamma 0.2, beta 10)."""
  return weighted_bce(logits, target, alpha) + beta * focal_loss(logits, target, gamma)
