"""GFP-GAN's training losses (Wang et al., CVPR 2021, sec. 3.3, eqs. 1-6) with the weights of
the release's options (train_gfpgan_v1.yml); configs/baselines/gfpgan.py `loss` holds them.

Images are faces in [-1, 1] (the release's range). The identity-preserving loss (eq. 6) is in
when an ArcFace is given (config.backbones.arcface); the facial-component losses (eq. 5) are
the functions at the end, used when the data carries per-face eye / mouth boxes.
"""

from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from pikfix_jax.losses import common
from pikfix_jax.models import layers

# GAN loss of the release ('wgan_softplus' in its options): D minimises softplus(-D(real)) +
# softplus(D(fake)), G minimises softplus(-D(fake)): the non-saturating logistic loss.
ADVERSARIAL = 'nonsaturating'


def image_pyramid(image: jnp.ndarray, levels: int) -> list[jnp.ndarray]:
  """[image at side / 2^(levels-1), ..., side / 2, side]: the targets of the intermediate RGB
  outputs (eq. 2's pyramid restoration loss), each level the mean of 2x2 tiles of the next
  (torch's bilinear 0.5 scale without anti-aliasing, as the release builds them)."""
  pyramid = [image]
  for _ in range(levels - 1):
    pyramid.insert(0, layers.downsample(pyramid[0], 2))
  return pyramid


def gram(features: jnp.ndarray) -> jnp.ndarray:
  """(B, H, W, C) -> (B, C, C) Gram matrices divided by C H W (the release's style loss)."""
  b, h, w, c = features.shape
  flat = features.astype(jnp.float32).reshape(b, h * w, c)
  return jnp.einsum('bpi,bpj->bij', flat, flat) / (c * h * w)


def perceptual_and_style(features: Mapping[str, jnp.ndarray],
                         target_features: Mapping[str, jnp.ndarray],
                         layer_weights: Mapping[str, float]) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(sum_j w_j |phi_j(y) - phi_j(x)|_1, sum_j w_j |Gram(phi_j(y)) - Gram(phi_j(x))|_1), L1 as
  means: eq. 3's perceptual term with the release's criterion 'l1' and its style term."""
  content = sum(w * common.l1(features[n], target_features[n]) for n, w in layer_weights.items())
  style = sum(w * common.l1(gram(features[n]), gram(target_features[n]))
              for n, w in layer_weights.items())
  return content, style


def r1_penalty(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], real: jnp.ndarray
               ) -> jnp.ndarray:
  """R1 (Mescheder et al. 2018): E_x |grad_x D(x)|^2 on real images, the squared gradient
  summed over each image and averaged over the batch (the release's r1_penalty)."""
  grad = jax.grad(lambda x: jnp.sum(logits_fn(x).astype(jnp.float32)))(real)
  return jnp.mean(jnp.sum(jnp.square(grad.reshape(grad.shape[0], -1)), axis=-1))


def identity_loss(embedding: jnp.ndarray, target_embedding: jnp.ndarray) -> jnp.ndarray:
  """Eq. 6 as the release computes it: the mean absolute difference between the ArcFace
  embeddings (B, 512) of the output and of the target (the target's held constant)."""
  return common.l1(embedding, jax.lax.stop_gradient(target_embedding))


def generator_loss(image: jnp.ndarray, out_rgbs: Sequence[jnp.ndarray], target: jnp.ndarray,
                   fake_logits: jnp.ndarray, features: Mapping[str, jnp.ndarray],
                   target_features: Mapping[str, jnp.ndarray],
                   pyramid_weight: jnp.ndarray, loss_config: ml_collections.ConfigDict,
                   identity_embeddings: Optional[tuple[jnp.ndarray, jnp.ndarray]] = None
                   ) -> dict[str, jnp.ndarray]:
  """The generator's terms and their weighted sum 'total' (eq. 1 without the component
  terms): pixel L1 (eq. 3's L1), the pyramid L1 on the U-Net's intermediate RGB images (eq.
  2), VGG-19 perceptual + style (eq. 3), adversarial (eq. 4) and, given the (output, target)
  ArcFace embeddings, the identity term 'identity' (eq. 6)."""
  c = loss_config
  pyramid = image_pyramid(target, len(out_rgbs))
  terms = {'pixel_l1': common.l1(image, target),
           'pyramid_l1': sum(common.l1(o, t) for o, t in zip(out_rgbs, pyramid)),
           'adversarial': common.generator_adversarial_loss(fake_logits, ADVERSARIAL)}
  terms['perceptual'], terms['style'] = perceptual_and_style(
      features, target_features, dict(zip(c.perceptual_layers, c.perceptual_layer_weights)))
  terms['total'] = (c.pixel_weight * terms['pixel_l1'] + pyramid_weight * terms['pyramid_l1'] +
                    c.perceptual_weight * terms['perceptual'] + c.style_weight * terms['style'] +
                    c.adversarial_weight * terms['adversarial'])
  if identity_embeddings is not None:
    terms['identity'] = identity_loss(*identity_embeddings)
    terms['total'] = terms['total'] + c.identity_weight * terms['identity']
  return terms


# --------------------------------------------------------------- facial component losses (eq. 5)
# Per component the release's GAN loss is 'vanilla' (binary cross-entropy on logits, weight 1
# for G): G minimises softplus(-D(fake)), D softplus(-D(real)) + softplus(D(fake)), means over
# the patch logits. A face whose boxes are missing (no landmarks) has validity 0: its terms are
# left out of the mean over the batch (all valid: the release's plain mean).


def valid_mean(per_example: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Mean of per_example (B,) over the examples with valid (B,) = 1; 0 when none is."""
  return jnp.sum(per_example * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def _per_example(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x.astype(jnp.float32).reshape(x.shape[0], -1), axis=-1)


def component_style(features: Sequence[jnp.ndarray], target_features: Sequence[jnp.ndarray]
                    ) -> jnp.ndarray:
  """(B,): the release's component style loss on a component discriminator's two feature maps,
  0.5 |Gram(f_1) - Gram(f_1^gt)|_1 + |Gram(f_2) - Gram(f_2^gt)|_1 (L1 as means), per face."""
  l1_gram = lambda a, b: _per_example(jnp.abs(gram(a) - gram(jax.lax.stop_gradient(b))))
  return (0.5 * l1_gram(features[0], target_features[0]) +
          l1_gram(features[1], target_features[1]))


def component_generator_loss(fake: Mapping[str, tuple[jnp.ndarray, Sequence[jnp.ndarray]]],
                             real_features: Mapping[str, Sequence[jnp.ndarray]],
                             valid: jnp.ndarray, loss_config: ml_collections.ConfigDict
                             ) -> dict[str, jnp.ndarray]:
  """The generator's facial-component terms (eq. 5): per component `comp_gan_<name>` (the GAN
  loss of its discriminator's logits on the restored crop), `comp_style` (summed over the
  components), and their weighted sum `comp_total` (component_gan_weight, comp_style_weight).
  fake: {name: (logits, features) of the restored crop}; real_features: {name: features of
  the target's crop}; valid (B, 3): 1 where the face's boxes exist (COMPONENTS order)."""
  c = loss_config
  terms, style = {}, 0.0
  for i, (name, (logits, features)) in enumerate(fake.items()):
    v = valid[:, i]
    terms[f'comp_gan_{name}'] = valid_mean(_per_example(jax.nn.softplus(-logits)), v)
    style = style + valid_mean(component_style(features, real_features[name]), v)
  terms['comp_style'] = style
  terms['comp_total'] = (c.component_gan_weight * sum(terms[f'comp_gan_{n}'] for n in fake) +
                         c.comp_style_weight * style)
  return terms


def component_discriminator_loss(real_logits: jnp.ndarray, fake_logits: jnp.ndarray,
                                 valid: jnp.ndarray) -> jnp.ndarray:
  """One component discriminator's loss: softplus(-D(real)) + softplus(D(fake)) over the valid
  faces (valid (B,))."""
  per_example = (_per_example(jax.nn.softplus(-real_logits)) +
                 _per_example(jax.nn.softplus(fake_logits)))
  return valid_mean(per_example, valid)
