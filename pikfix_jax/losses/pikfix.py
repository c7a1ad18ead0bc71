"""Training objective of Pik-Fix (sec. 3.4):

L = alpha L1(I'_L, G_L) + beta Perc(I'_L, G_L) + lambda EMD + gamma L1(I_ab, G_ab) + eta Adv.
"""

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from pikfix_jax.losses import common
from pikfix_jax.ops import color
from pikfix_jax.ops import histogram

def luminance_perceptual_loss(vgg_features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]],
                              restored_l: jnp.ndarray, target_l: jnp.ndarray) -> jnp.ndarray:
  """Perceptual loss on restored vs ground-truth L, each shown to VGG-19 as a grey RGB image
  (the backbone applies the ImageNet normalisation). Two VGG passes, not one on the stacked
  pair: the target's pass needs no backward, which a stacked pass would compute for the whole
  batch (the target half with a zero cotangent; ~2x the VGG backward, docs/MODEL.md "Performance rewrites")."""
  target = jax.lax.stop_gradient(vgg_features(color.gray_to_rgb(target_l)))
  return common.perceptual_loss(vgg_features(color.gray_to_rgb(jnp.clip(restored_l, 0, 1))), target)


def generator_loss(outputs: Mapping[str, jnp.ndarray], target_lab: jnp.ndarray,
                     fake_logits: jnp.ndarray,
                     vgg_features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]],
                     config: ml_collections.ConfigDict) -> dict[str, jnp.ndarray]:
  """Every term of the objective and their weighted sum ('total').

  Args:
    outputs: the generator's outputs (`PikFix.__call__`).
    target_lab: ground truth, normalised Lab (B, H, W, 3).
    fake_logits: D's logits on the generator's output.
    vgg_features: frozen VGG-19 returning the perceptual layers.
    config: the `loss` section of the config.
  """
  target_l, target_ab = target_lab[..., :1], target_lab[..., 1:]
  terms = {
      'l1_luminance': common.l1(outputs['restored_l'], target_l),
      'perceptual': (luminance_perceptual_loss(vgg_features, outputs['restored_l'], target_l)
                     if config.beta else jnp.zeros(())),
      'emd': histogram.emd_loss(outputs['output_hist'], outputs['reference_hist']),
      'l1_chroma': common.l1(outputs['ab'], target_ab),
      'adversarial': common.generator_adversarial_loss(fake_logits, config.adversarial),
  }
  terms['total'] = (config.alpha * terms['l1_luminance'] + config.beta * terms['perceptual']
                    + config.lambda_emd * terms['emd'] + config.gamma * terms['l1_chroma']
                    + config.eta * terms['adversarial'])
  return terms
