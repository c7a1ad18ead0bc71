"""Wan et al. 2020 ("Old Photo Restoration via Deep Latent Space Translation", TPAMI) as a
method, trained in its stages (methods.base.stages):

  'vae'      VAE1 (E_{R,X}, G_{R,X}) on real old photos R and synthetic ones X, VAE2 (E_Y, G_Y)
             on clean photos Y: KL + alpha L1 + image LSGAN (eq. 2), and the latent LSGAN
             between Z_R and Z_X (eqs. 3-4), with their discriminators;
  'mapping'  the VAEs frozen, T maps E_X(x) to E_Y(y) with the partial nonlocal block given the
             defect mask: lambda_1 L1 in the latent + LSGAN + lambda_2 (D and VGG feature
             matching) (eqs. 5-6);
  'scratch'  the scratch-detection U-Net on the pipeline's defect mask: weighted BCE + focal
             (eqs. 11-15).
Inference: the detector's mask -> E_{R,X} -> T -> G_Y. It restores L only; its output is the
restored L with zero chroma (how the paper's tables can score a method that does not colourise).

X and Y are the synthetic pairs of the data pipeline (input_l, target L), the defect mask its
`defect_mask` field (config.data.defect_mask); R is `real_l` (config.data.real_old_dir), without
which VAE1 sees X alone and the latent GAN is off (a warning; docs/MODEL.md). The networks and
losses are models/wan.py and losses/wan.py.
"""

from typing import Any, Optional

from absl import logging
import dm_pix
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pikfix_jax import inference
from pikfix_jax import optim
from pikfix_jax.losses import common
from pikfix_jax.losses import wan as wan_losses
from pikfix_jax.methods import base
from pikfix_jax.models import backbones
from pikfix_jax.models import wan
from pikfix_jax.ops import color

STAGES = ('vae', 'mapping', 'scratch')
G_NETS = {'vae': ('vae1', 'vae2'), 'mapping': ('mapping',), 'scratch': ('scratch',)}
D_NETS = {'vae': ('d_vae1', 'd_vae2', 'd_latent'), 'mapping': ('d_mapping',), 'scratch': ()}
SCALARS = {
    'vae': ('total', 'vae1_kl', 'vae1_l1', 'vae1_gan', 'vae2_kl', 'vae2_l1', 'vae2_gan',
            'latent_gan', 'd_loss', 'd_latent', 'g_grad_norm', 'learning_rate'),
    'mapping': ('total', 'latent_l1', 'image_l1', 'gan', 'feature_matching', 'vgg', 'd_loss',
                'psnr', 'ssim', 'g_grad_norm', 'learning_rate'),
    'scratch': ('total', 'iou', 'g_grad_norm', 'learning_rate'),
}
LOSS_TERMS = {'vae': ('total', 'd_loss', 'd_latent'), 'mapping': ('total', 'd_loss'),
              'scratch': ('total',)}


class WanNetworks(nn.Module):
  """VAE1, VAE2, the mapping T and the scratch detector; called, the inference pipeline:
  (input_l, reference_rgb (ignored), train, mask) -> {'rgb', 'restored_l', 'ab',
  'scratch_mask'}; `mask` None: the detector's, thresholded."""
  config: Any  # config.model (a FrozenConfigDict: hashable).

  def setup(self):
    m = self.config
    vae = dict(features=m.vae_features, n_downsample=m.vae_downsample, n_res=m.vae_res)
    self.vae1 = wan.VAE(**vae)
    self.vae2 = wan.VAE(**vae)
    self.mapping = wan.MappingNetwork(tuple(m.mapping_widths_in), m.mapping_res,
                                      tuple(m.mapping_widths_out), m.mapping_global_res,
                                      mask_factor=2 ** m.vae_downsample)
    self.scratch = wan.ScratchDetector(m.detector_features, m.detector_depth)

  def detect(self, l: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Scratch-mask logits (B, H, W, 1)."""
    return self.scratch(l, train)

  def __call__(self, input_l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None,
               train: bool = False, mask: Optional[jnp.ndarray] = None) -> dict:
    del reference_rgb
    if mask is None:
      mask = (jax.nn.sigmoid(self.detect(input_l)) > self.config.scratch_threshold)
    mask = mask.astype(jnp.float32)
    z, _ = self.vae1.encode(input_l)
    restored = jnp.clip(self.vae2.decode(self.mapping(z, mask), hw=input_l.shape[1:3]), 0, 1)
    return {'restored_l': restored, 'ab': jnp.zeros(restored.shape[:3] + (2,), restored.dtype),
            'rgb': color.gray_to_rgb(restored), 'scratch_mask': mask}

  def init_all(self, l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None) -> dict:
    """Touches every network (the inference path leaves VAE1's decoder and VAE2's encoder
    out), so `init` creates all their variables."""
    self.vae1(l)
    self.vae2(l)
    return self(l, reference_rgb)


class Method(base.Method):
  """Wan et al. 2020 (module docstring): config.model, config.loss and config.train.stages /
  stage_steps / stage of configs/baselines/wan2020.py."""

  uses_reference = False
  # Pik-Fix's Tables 1-2, which ran the authors' release.
  paper_rows = {
      ('voc', True): ('Pik-Fix Table 1, Pascal VOC (w/ degradation)', (18.01, 0.598, 0.421)),
      ('realold', False): ('Pik-Fix Table 2, RealOld', (16.99, 0.709, 0.303)),
  }
  config_modules = ('configs.baselines.wan2020',)

  @classmethod
  def label(cls, config) -> str:
    return 'Wan et al. 2020 (restored L, zero chroma)'

  def __init__(self, config, steps_per_epoch: int = 1):
    super().__init__(config, steps_per_epoch)
    m = config.model
    self.generator = WanNetworks(ml_frozen(m))
    self.discriminators = {
        'd_vae1': wan.MultiscaleDiscriminator(m.d_scales, m.d_features, m.d_layers),
        'd_vae2': wan.MultiscaleDiscriminator(m.d_scales, m.d_features, m.d_layers),
        'd_latent': wan.LatentDiscriminator(m.d_features, m.d_layers),
        'd_mapping': wan.MultiscaleDiscriminator(m.d_scales, m.d_features, m.d_layers)}
    self.vgg = backbones.VGG(depth=19, outputs=wan_losses.VGG_LAYERS)
    self.real_photos = bool(config.data.real_old_dir)
    self.scalars = tuple(dict.fromkeys(s for v in SCALARS.values() for s in v))
    self.loss_terms = ('total',)
    if not config.data.defect_mask:
      raise ValueError('Wan et al. needs the defect mask (scratch detector targets, partial '
                       'nonlocal mask): set --config.data.defect_mask=True')

  def networks(self) -> dict:
    def latent(m, l):
      f = 2 ** self.config.model.vae_downsample
      return jnp.zeros((l.shape[0], -(-l.shape[1] // f), -(-l.shape[2] // f),
                        self.config.model.vae_features), l.dtype)
    return {'scratch detector': lambda m, l: m.detect(l),
            'VAE1 encoder': lambda m, l: m.vae1.encode(l)[0],
            'mapping T': lambda m, l: m.mapping(latent(m, l), jnp.zeros_like(l)),
            'VAE2 decoder': lambda m, l: m.vae2.decode(latent(m, l))}

  def make_restorer(self, variables: dict, **options):
    """The whole pipeline at once; `restorer.mask` (restore --scratch_mask) replaces the
    detector's mask."""
    kept = {k: v for k, v in options.items() if k == 'reference_size' and v}
    return inference.WholeImageRestorer(self.generator, variables, False, accepts_mask=True,
                                        max_pixels=self.config.model.get('max_restore_pixels',
                                                                   2048 * 2048),
                                        **kept)

  # ------------------------------------------------------------------------- stages
  def stages(self) -> tuple[tuple[str, int], ...]:
    t = self.config.train
    if tuple(t.stages) != STAGES or len(t.stage_steps) != len(STAGES):
      raise ValueError(f'config.train.stages must be {STAGES} with one stage_steps entry each')
    return tuple(zip(STAGES, (int(n) for n in t.stage_steps)))

  def scalars_of(self, stage: Optional[str]) -> tuple[str, ...]:
    return SCALARS[stage] if stage else self.scalars

  def loss_terms_of(self, stage: Optional[str]) -> tuple[str, ...]:
    return LOSS_TERMS[stage] if stage else self.loss_terms

  # -------------------------------------------------------------------------- state
  def init_generator(self, key, size: int) -> dict:
    return self.generator.init(key, *base.example_inputs(size), method=WanNetworks.init_all)

  def init_discriminator(self, key, size: int) -> dict:
    l, _ = base.example_inputs(size)
    m = self.config.model
    latent = jnp.zeros((1, size // 2 ** m.vae_downsample, size // 2 ** m.vae_downsample,
                        m.vae_features), jnp.float32)
    keys = jax.random.split(key, 4)
    return {'d_vae1': self.discriminators['d_vae1'].init(keys[0], l)['params'],
            'd_vae2': self.discriminators['d_vae2'].init(keys[1], l)['params'],
            'd_latent': self.discriminators['d_latent'].init(keys[2], latent)['params'],
            'd_mapping': self.discriminators['d_mapping'].init(keys[3], l, l)['params']}

  def init_optimizer(self, params: dict, discriminator: bool) -> dict:
    """One Adam state per network: each stage updates its own networks only."""
    tx = self.d_tx if discriminator else self.g_tx
    return {name: tx.init(p) for name, p in params.items()}

  def init_state(self, seed: int) -> base.TrainState:
    if not self.real_photos:
      logging.warning('config.data.real_old_dir is empty: VAE1 trains on synthetic old photos '
                      'alone and the latent GAN that aligns real and synthetic codes is off '
                      '(docs/MODEL.md, "Wan et al. 2020").')
    return super().init_state(seed)

  # --------------------------------------------------------------------------- steps
  def _update(self, state: base.TrainState, names: tuple[str, ...], grads: dict,
              discriminator: bool) -> tuple[dict, dict]:
    """Adam steps of the networks `names` (of g or d); the others are left as they are."""
    params = dict(state.d_params if discriminator else state.g_params)
    opt = dict(state.d_opt_state if discriminator else state.g_opt_state)
    for name in names:
      tx = self.d_tx if discriminator else self.g_tx
      updates, opt[name] = tx.update(grads[name], opt[name], params[name])
      params[name] = optax.apply_updates(params[name], updates)
    return params, opt

  def _apply(self, g_params: dict, batch_stats: dict, fn, *args, **kwargs):
    return self.generator.apply({'params': g_params, 'batch_stats': batch_stats}, *args,
                                method=fn, **kwargs)

  def train_step(self, state: base.TrainState, batch: dict, frozen: Any,
                 stage: str = 'vae') -> tuple[base.TrainState, dict]:
    step_rng = jax.random.fold_in(state.rng, state.step)
    if stage == 'vae':
      state, scalars = self._vae_step(state, batch, step_rng)
    elif stage == 'mapping':
      state, scalars = self._mapping_step(state, batch, frozen)
    elif stage == 'scratch':
      state, scalars = self._scratch_step(state, batch)
    else:
      raise ValueError(f'unknown stage {stage!r}; one of {STAGES}')
    # The rate this stage's networks apply: each has its own Adam state, whose update count (and
    # so its schedule, optim.py) starts at the stage's first step.
    start = sum(n for _, n in self.stages()[:STAGES.index(stage)])
    scalars['learning_rate'] = optim.learning_rate(self.config, state.step - start,
                                                   self.steps_per_epoch)
    return state.replace(step=state.step + 1), scalars

  def _vae_step(self, state, batch, rng):
    c = self.config.loss
    x, y = batch['input_l'], batch['target_lab'][..., :1]
    r = batch.get('real_l')
    d = self.discriminators
    keys = jax.random.split(rng, 3)

    def forward(g):
      p = {**state.g_params, 'vae1': g['vae1'], 'vae2': g['vae2']}
      out = {'x': self._apply(p, state.g_batch_stats, lambda m, v: m.vae1(v, True, keys[0]), x),
             'y': self._apply(p, state.g_batch_stats, lambda m, v: m.vae2(v, True, keys[1]), y)}
      if r is not None:
        out['r'] = self._apply(p, state.g_batch_stats,
                               lambda m, v: m.vae1(v, True, keys[2]), r)
      return out

    g = {k: state.g_params[k] for k in G_NETS['vae']}
    outs, pullback = jax.vjp(forward, g)
    fake = jax.lax.stop_gradient(outs)
    images1 = [('x', x)] + ([('r', r)] if r is not None else [])

    def d_loss_fn(dp):
      loss1 = sum(wan_losses.lsgan_discriminator_loss(
          d['d_vae1'].apply({'params': dp['d_vae1']}, real),
          d['d_vae1'].apply({'params': dp['d_vae1']}, fake[k]['recon'])) for k, real in images1)
      loss2 = wan_losses.lsgan_discriminator_loss(
          d['d_vae2'].apply({'params': dp['d_vae2']}, y),
          d['d_vae2'].apply({'params': dp['d_vae2']}, fake['y']['recon']))
      latent = (wan_losses.latent_discriminator_loss(
          d['d_latent'].apply({'params': dp['d_latent']}, fake['r']['mu']),
          d['d_latent'].apply({'params': dp['d_latent']}, fake['x']['mu']))
                if r is not None else jnp.zeros(()))
      return loss1 + loss2 + latent, (loss1 + loss2, latent)

    (_, (d_loss, d_latent)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.d_params)
    d_params, d_opt = self._update(state, D_NETS['vae'] if r is not None else
                                   ('d_vae1', 'd_vae2'), d_grads, discriminator=True)

    def g_loss_fn(o):
      terms = {}
      for net, keys_, dname in (('vae1', [k for k, _ in images1], 'd_vae1'),
                                ('vae2', ['y'], 'd_vae2')):
        targets = {'x': x, 'y': y, 'r': r}
        terms[f'{net}_kl'] = sum(wan_losses.kl_divergence(o[k]['mu']) for k in keys_)
        terms[f'{net}_l1'] = sum(common.l1(o[k]['recon'], targets[k]) for k in keys_)
        terms[f'{net}_gan'] = sum(wan_losses.lsgan_generator_loss(
            d[dname].apply({'params': d_params[dname]}, o[k]['recon'])) for k in keys_)
      terms['latent_gan'] = (wan_losses.latent_generator_loss(
          d['d_latent'].apply({'params': d_params['d_latent']}, o['r']['mu']))
                             if r is not None else jnp.zeros(()))
      total = sum(c.kl_weight * terms[f'{n}_kl'] + c.recon_weight * terms[f'{n}_l1'] +
                  terms[f'{n}_gan'] for n in ('vae1', 'vae2')) + terms['latent_gan']
      return total, dict(terms, total=total)

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)(outs)
    (g_grads,) = pullback(cotangent)
    g_params, g_opt = self._update(state, G_NETS['vae'], g_grads, discriminator=False)
    scalars = dict(terms, d_loss=d_loss, d_latent=d_latent,
                   g_grad_norm=optax.global_norm(g_grads))
    return state.replace(g_params=g_params, g_opt_state=g_opt, d_params=d_params,
                         d_opt_state=d_opt), scalars

  def _mapping_step(self, state, batch, vgg_variables):
    c = self.config.loss
    x, y, mask = batch['input_l'], batch['target_lab'][..., :1], batch['defect_mask']
    p, stats = state.g_params, state.g_batch_stats
    z_x = jax.lax.stop_gradient(self._apply(p, stats, lambda m, v: m.vae1.encode(v)[0], x))
    z_y = jax.lax.stop_gradient(self._apply(p, stats, lambda m, v: m.vae2.encode(v)[0], y))
    d = self.discriminators['d_mapping']
    hw = x.shape[1:3]

    def forward(mapping):
      q = {**p, 'mapping': mapping}
      z = self._apply(q, stats, lambda m, v, k: m.mapping(v, k), z_x, mask)
      return z, self._apply(q, stats, lambda m, v: m.vae2.decode(v, hw=hw), z)

    (z_m, out), pullback = jax.vjp(forward, p['mapping'])

    def d_loss_fn(dp):
      real = d.apply({'params': dp['d_mapping']}, y, x)
      fake = d.apply({'params': dp['d_mapping']}, jax.lax.stop_gradient(out), x)
      return wan_losses.lsgan_discriminator_loss(real, fake)

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.d_params)
    d_params, d_opt = self._update(state, D_NETS['mapping'], d_grads, discriminator=True)
    vgg = lambda v: self.vgg.apply(vgg_variables, v)
    real_outputs = d.apply({'params': d_params['d_mapping']}, y, x)

    def g_loss_fn(zo):
      z, o = zo
      fake_outputs = d.apply({'params': d_params['d_mapping']}, o, x)
      terms = {'latent_l1': common.l1(z, z_y), 'image_l1': common.l1(o, y),
               'gan': wan_losses.lsgan_generator_loss(fake_outputs),
               'feature_matching': wan_losses.feature_matching_loss(fake_outputs, real_outputs),
               'vgg': wan_losses.vgg_feature_matching_loss(vgg, o, y)}
      total = (c.latent_l1_weight * terms['latent_l1'] + c.image_l1_weight * terms['image_l1'] +
               terms['gan'] +
               c.feature_matching_weight * (terms['feature_matching'] + terms['vgg']))
      return total, dict(terms, total=total)

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)((z_m, out))
    (grad,) = pullback(cotangent)
    g_params, g_opt = self._update(state, ('mapping',), {'mapping': grad}, discriminator=False)
    target = color.gray_to_rgb(y)
    scalars = dict(terms, d_loss=d_loss, g_grad_norm=optax.global_norm(grad),
                   psnr=jnp.mean(dm_pix.psnr(color.gray_to_rgb(jnp.clip(out, 0, 1)), target)),
                   ssim=jnp.mean(dm_pix.ssim(color.gray_to_rgb(jnp.clip(out, 0, 1)), target)))
    return state.replace(g_params=g_params, g_opt_state=g_opt, d_params=d_params,
                         d_opt_state=d_opt), scalars

  def _scratch_step(self, state, batch):
    x, target = batch['input_l'], batch['defect_mask']
    c = self.config.loss

    def loss_fn(scratch):
      p = {**state.g_params, 'scratch': scratch}
      logits, updates = self.generator.apply(
          {'params': p, 'batch_stats': state.g_batch_stats}, x, True,
          method=WanNetworks.detect, mutable=['batch_stats'])
      loss = wan_losses.detection_loss(logits, target, gamma=c.focal_gamma, beta=c.focal_weight)
      return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grad = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params['scratch'])
    g_params, g_opt = self._update(state, ('scratch',), {'scratch': grad}, discriminator=False)
    predicted = logits > 0.0
    truth = target > 0.5
    iou = (jnp.sum(predicted & truth) + 1e-6) / (jnp.sum(predicted | truth) + 1e-6)
    scalars = {'total': loss, 'iou': iou, 'g_grad_norm': optax.global_norm(grad)}
    return state.replace(g_params=g_params, g_opt_state=g_opt, g_batch_stats=batch_stats), scalars


def ml_frozen(model_config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """A hashable copy of config.model (a Flax module field)."""
  return ml_collections.FrozenConfigDict(model_config)
