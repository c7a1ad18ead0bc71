"""Pik-Fix (WACV 2023) as a method: restoration, similarity and colorization sub-nets, trained
with L1, perceptual, EMD and PatchGAN losses (paper eq. 6-10).

One jitted step updates the PatchGAN discriminator and the generator. The generator's
forward pass runs once (`jax.vjp`): D is updated on its (stop-gradient) output, then the
generator's loss is differentiated w.r.t. that output - with D before or after its update
(`config.train.d_first`) - and pulled back through the generator.
"""

import functools
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from pikfix_jax import checkpoints
from pikfix_jax import inference
from pikfix_jax import optim
from pikfix_jax import weights
from pikfix_jax.losses import common
from pikfix_jax.losses import pikfix as pikfix_losses
from pikfix_jax.methods import base
from pikfix_jax.models import backbones
from pikfix_jax.models import pikfix

LOSS_TERMS = ('total', 'l1_luminance', 'perceptual', 'emd', 'l1_chroma', 'adversarial')
SCALARS = LOSS_TERMS + ('d_loss', 'd_real', 'd_fake', 'psnr', 'ssim', 'g_grad_norm',
                        'd_grad_norm', 'learning_rate', 'bin_center_min', 'bin_center_max',
                        'bin_gap_mean', 'bin_gap_min')
FROZEN_BACKBONE = 'resnet34'  # Generator subtree kept frozen unless similarity.train_backbone.


class Method(base.Method):
  """Pik-Fix: the generator of `models.pikfix`, its PatchGAN and the frozen VGG-19 of the
  perceptual loss (`vgg`, passed to the step as `frozen`)."""

  uses_reference = True
  exports_stablehlo = True
  # Pik-Fix's Table 1 (synthetic data) and Table 2 (RealOld).
  paper_rows = {
      ('div2k', False): ('Table 1, DIV2K (w/o degradation)', (23.95, 0.925, 0.120)),
      ('voc', False): ('Table 1, Pascal VOC (w/o degradation)', (24.01, 0.940, 0.100)),
      ('voc', True): ('Table 1, Pascal VOC (w/ degradation)', (22.22, 0.828, 0.186)),
      ('realold', False): ('Table 2, RealOld', (17.20, 0.758, 0.258)),
  }
  config_modules = ('configs.default',)
  loss_terms = LOSS_TERMS + ('d_loss',)
  scalars = SCALARS

  def __init__(self, config, steps_per_epoch: int = 1):
    super().__init__(config, steps_per_epoch)
    self.generator = pikfix.build_generator(config.model)
    self.discriminator = pikfix.build_discriminator(config.model)
    self.vgg = backbones.VGG(depth=19, outputs=tuple(config.loss.perceptual_layers),
                             dtype=pikfix.dtype_from_name(config.model.dtype))

  @classmethod
  def label(cls, config) -> str:
    return 'Pik-Fix'

  # --------------------------------------------------------------------------- state
  def split_frozen(self, params: dict) -> tuple[dict, dict]:
    """(trainable, frozen): frozen holds the ResNet-34 subtree unless
    config.model.similarity.train_backbone."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    train_backbone = self.config.model.similarity.train_backbone
    is_frozen = lambda path: (not train_backbone) and FROZEN_BACKBONE in path
    trainable = {k: v for k, v in flat.items() if not is_frozen(k)}
    frozen = {k: v for k, v in flat.items() if is_frozen(k)}
    return (flax.traverse_util.unflatten_dict(trainable),
            flax.traverse_util.unflatten_dict(frozen))

  def init_discriminator(self, key, size: int) -> dict:
    l, _ = base.example_inputs(size)
    k = self.config.model.histogram.num_bins
    condition = (jnp.zeros((1, 2 * k), jnp.float32)
                 if self.config.model.discriminator.condition_on_reference else None)
    return self.discriminator.init(key, l, jnp.zeros((1, size, size, 2)), condition)['params']

  def load_pretrained(self, g_vars: dict) -> dict:
    """The similarity sub-net's ResNet-34 from config.backbones.resnet34, when given."""
    if 'similarity_net' in g_vars['params']:
      resnet = {'params': g_vars['params']['similarity_net']['resnet34'],
                'batch_stats': g_vars['batch_stats']['similarity_net']['resnet34']}
      resnet = weights.maybe_load_backbone(self.config.backbones.resnet34, 'resnet34', resnet)
      g_vars['params']['similarity_net']['resnet34'] = resnet['params']
      g_vars['batch_stats']['similarity_net']['resnet34'] = resnet['batch_stats']
    return g_vars

  # ----------------------------------------------------------------------------- step
  def _condition(self, outputs: dict) -> Optional[jnp.ndarray]:
    if not self.config.model.discriminator.condition_on_reference:
      return None
    hist = outputs['reference_hist']
    return jax.lax.stop_gradient(hist.reshape(hist.shape[0], -1))

  def train_step(self, state: base.TrainState, batch: dict, frozen: Any
                 ) -> tuple[base.TrainState, dict]:
    c = self.config
    vgg_features = functools.partial(self.vgg.apply, frozen)
    step_rng = jax.random.fold_in(state.rng, state.step)
    target_l = batch['target_lab'][..., :1]
    target_ab = batch['target_lab'][..., 1:]

    def forward(g_params):
      variables = {'params': checkpoints.merge_params(g_params, state.g_frozen),
                   'batch_stats': state.g_batch_stats}
      return self.generator.apply(variables, batch['input_l'], batch['reference_rgb'],
                                  train=True, rngs={'dropout': step_rng})

    outputs, pullback = jax.vjp(forward, state.g_params)
    condition = self._condition(outputs)
    fake_ab = jax.lax.stop_gradient(outputs['ab'])

    def d_loss_fn(d_params):
      # D judges chroma: real and fake ab are both shown with the ground-truth luminance.
      real = self.discriminator.apply({'params': d_params}, target_l, target_ab, condition)
      fake = self.discriminator.apply({'params': d_params}, target_l, fake_ab, condition)
      return common.discriminator_loss(real, fake, c.loss.adversarial), (real, fake)

    def d_update(d_params, d_opt_state):
      (d_loss, (real, fake)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      updates, d_opt_state = self.d_tx.update(grads, d_opt_state, d_params)
      aux = {'d_loss': d_loss, 'd_real': jnp.mean(jax.nn.sigmoid(real)),
             'd_fake': jnp.mean(jax.nn.sigmoid(fake)), 'd_grad_norm': optax.global_norm(grads)}
      return optax.apply_updates(d_params, updates), d_opt_state, aux

    def d_updates(d_params, d_opt_state):
      # Unrolled, not lax.scan: inside a loop body XLA:CPU lowers D's weight-gradient
      # convolutions to a naive kernel (~20x slower; docs/MODEL.md, "Performance rewrites").
      for _ in range(c.train.d_steps):
        d_params, d_opt_state, aux = d_update(d_params, d_opt_state)
      return d_params, d_opt_state, aux

    d_params, d_opt_state = state.d_params, state.d_opt_state
    if c.train.d_first:
      d_params, d_opt_state, d_aux = d_updates(d_params, d_opt_state)

    def g_loss_fn(outs):
      fake_logits = self.discriminator.apply(
          {'params': d_params}, target_l, outs['ab'], condition)
      terms = pikfix_losses.generator_loss(outs, batch['target_lab'], fake_logits,
                                      vgg_features, c.loss)
      return terms['total'], terms

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)(outputs)
    (g_grads,) = pullback(cotangent)
    g_updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    if not c.train.d_first:
      d_params, d_opt_state, d_aux = d_updates(d_params, d_opt_state)

    scalars = dict(terms, **d_aux, **base.image_scalars(outputs['rgb'], batch['target_lab']))
    scalars['g_grad_norm'] = optax.global_norm(g_grads)
    scalars['learning_rate'] = optim.learning_rate(c, state.step, self.steps_per_epoch)
    scalars.update(bin_center_spread(g_params['bin_centers']))
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    return new_state, scalars

  def make_restorer(self, variables: dict, **options):
    """Restoration in exact overlapping tiles, colour at bounded resolution (inference.py)."""
    return inference.Restorer(self.generator, variables, **options)


def bin_center_spread(centers: jnp.ndarray) -> dict:
  """The SPHist's learnable bin centres (eq. 4) in four numbers, to watch for a collapse
  (gaps near 0) or a drift out of [-1, 1]."""
  gaps = jnp.diff(jnp.sort(centers, axis=-1), axis=-1)
  return {'bin_center_min': jnp.min(centers), 'bin_center_max': jnp.max(centers),
          'bin_gap_mean': jnp.mean(gaps), 'bin_gap_min': jnp.min(gaps)}
