"""Latent diffusion restoration in Wan et al.'s latent space (issue 35), as a method:

  'vae'        Wan et al.'s VAE stage, exactly (methods/wan2020.py's step, models and losses):
               VAE1 (E_{R,X}, G_{R,X}) on old photos, VAE2 (E_Y, G_Y) on clean ones;
  'diffusion'  the VAEs frozen, a denoising U-Net (models/ldm.py) learns p(z_Y | c) on VAE2's
               latent z_Y = E_Y(y), conditioned by concatenation on c = E_{R,X}(x) (and, with
               model.condition_mask, the scratch mask pooled to the latent): the epsilon- or
               v-prediction loss (losses/wan_ldm.py) on Nichol & Dhariwal's cosine schedule;
  'scratch'    (only with model.condition_mask) Wan et al.'s scratch detector, whose mask
               conditions the sampler at inference.
Inference: z_T ~ N(0, I) (model.sampling_seed) -> DDIM (Song et al. 2021; model.sampling_steps,
model.sampling_eta; optional classifier-free guidance, Ho & Salimans 2022) -> G_Y -> restored L
with zero chroma, as Wan et al.'s method is scored.

model.denoiser = 'mapping' is the ablation that answers "does diffusion beat the one-shot
mapping?": the diffusion model replaced by Wan et al.'s mapping T, stages vae -> mapping ->
scratch, i.e. methods/wan2020.py itself (same steps, same networks, same inference).
docs/MODEL.md, "Latent diffusion in Wan et al.'s latent space", gives every choice and source.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from pikfix_jax import inference
from pikfix_jax import optim
from pikfix_jax.losses import wan_ldm as ldm_losses
from pikfix_jax.methods import base
from pikfix_jax.methods import wan2020
from pikfix_jax.models import ldm
from pikfix_jax.models import wan
from pikfix_jax.ops import color

DENOISERS = ('diffusion', 'mapping')
GUIDANCE = ('none', 'classifier_free')
SCALARS = dict(wan2020.SCALARS,
               diffusion=('total', 'denoising_mse', 'g_grad_norm', 'learning_rate'))
LOSS_TERMS = dict(wan2020.LOSS_TERMS, diffusion=('total',))


def stage_names(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The stages a model config trains, in order."""
  if model_config.denoiser == 'mapping':
    return wan2020.STAGES  # Wan et al. exactly
  return ('vae', 'diffusion', 'scratch') if model_config.condition_mask else ('vae', 'diffusion')


class LDMNetworks(wan2020.WanNetworks):
  """Wan et al.'s networks plus the latent denoiser; called, the inference pipeline:
  (input_l, reference_rgb (ignored), train, mask, steps, eta, seed) -> {'rgb', 'restored_l',
  'ab'[, 'scratch_mask']}. steps / eta / seed default to config.sampling_*; they may be traced
  (one compile for all). model.denoiser = 'mapping': WanNetworks' pipeline unchanged."""

  def setup(self):
    super().setup()
    m = self.config
    if m.denoiser == 'diffusion':
      self.denoiser = ldm.LatentUNet(tuple(m.unet_widths), m.unet_res_blocks, m.unet_heads,
                                     m.unet_dropout, jnp.dtype(m.dtype))

  def scratch_mask(self, input_l: jnp.ndarray) -> jnp.ndarray:
    """The detector's thresholded mask (B, H, W, 1), as Wan et al.'s inference."""
    return (jax.nn.sigmoid(self.detect(input_l)) > self.config.scratch_threshold
            ).astype(jnp.float32)

  def condition(self, input_l: jnp.ndarray, mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """c = E_{R,X}(x) (VAE1's latent mean of the degraded photo), with config.condition_mask
    the scratch mask (`mask`, else the detector's) max-pooled to the latent (wan.latent_mask,
    as the partial nonlocal block sees it) as one more channel."""
    c, _ = self.vae1.encode(input_l)
    if self.config.condition_mask:
      mask = self.scratch_mask(input_l) if mask is None else mask
      c = jnp.concatenate([c, wan.latent_mask(mask, c.shape[1:3],
                                              2 ** self.config.vae_downsample)], axis=-1)
    return c

  def predict(self, z_t: jnp.ndarray, t: jnp.ndarray, condition: jnp.ndarray,
              train: bool = False) -> jnp.ndarray:
    """The denoiser's eps or v prediction."""
    return self.denoiser(z_t, t, condition, train)

  def guided_predict(self, z_t: jnp.ndarray, t: jnp.ndarray, condition: jnp.ndarray,
                     scale: Any) -> jnp.ndarray:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): pred(c) + w (pred(c) - pred(0)),
    here written (1 + w) pred(c) - w pred(0) with the null condition all zeros (what training
    drops c to); both halves in one batch. guidance 'none': pred(c)."""
    if self.config.guidance != 'classifier_free':
      return self.predict(z_t, t, condition)
    both = self.predict(jnp.concatenate([z_t, z_t]), jnp.concatenate([t, t]),
                        jnp.concatenate([condition, jnp.zeros_like(condition)]))
    conditional, unconditional = jnp.split(both, 2)
    return conditional + scale * (conditional - unconditional)

  def sample_latent(self, condition: jnp.ndarray, steps: Any, eta: Any, seed: Any
                    ) -> jnp.ndarray:
    """z_0 ~ p(z_Y | c) by DDIM from z_T ~ N(0, I) drawn from `seed` (models/ldm.py)."""
    m = self.config
    init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
    shape = condition.shape[:3] + (m.vae_features,)
    z_T = jax.random.normal(init_key, shape, jnp.float32)
    denoise = lambda z, t: self.guided_predict(z, t, condition, m.guidance_scale)
    return ldm.ddim_sample(denoise, z_T, loop_key, steps, eta, _alphas(m),
                           m.parameterization, m.x0_clip)

  def __call__(self, input_l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None,
               train: bool = False, mask: Optional[jnp.ndarray] = None, steps: Any = None,
               eta: Any = None, seed: Any = None) -> dict:
    m = self.config
    if m.denoiser == 'mapping':
      return super().__call__(input_l, reference_rgb, train, mask)
    if m.condition_mask and mask is None:
      mask = self.scratch_mask(input_l)
    z0 = self.sample_latent(self.condition(input_l, mask),
                            m.sampling_steps if steps is None else steps,
                            m.sampling_eta if eta is None else eta,
                            m.sampling_seed if seed is None else seed)
    restored = jnp.clip(self.vae2.decode(z0 / m.latent_scale, hw=input_l.shape[1:3]), 0, 1)
    out = {'restored_l': restored, 'ab': jnp.zeros(restored.shape[:3] + (2,), restored.dtype),
           'rgb': color.gray_to_rgb(restored)}
    if m.condition_mask:
      out['scratch_mask'] = mask
    return out

  def init_all(self, l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None) -> dict:
    """Touches the networks this config trains (VAE1's decoder, VAE2's encoder, the denoiser
    outside its loop), so `init` creates exactly their variables: no mapping T in diffusion
    mode, no detector without the mask condition."""
    self.vae1(l)
    self.vae2(l)
    if self.config.denoiser == 'mapping':
      return self(l, reference_rgb)
    c = self.condition(l)
    self.predict(jnp.zeros(c.shape[:3] + (self.config.vae_features,)),
                 jnp.zeros((l.shape[0],), jnp.int32), c)
    return self(l, reference_rgb, steps=1)


class Method(wan2020.Method):
  """Latent diffusion in Wan et al.'s latent space (module docstring): config.model,
  config.diffusion_optim and config.train.stage_steps of configs/baselines/wan_ldm.py."""

  paper_rows = {}  # a new method: no paper reports it
  config_modules = ('configs.baselines.wan_ldm',)
  # config.model fields that change what inference computes but no variable: evaluate takes
  # them from its --config over the checkpoint's (a seed sweep needs no retraining).
  inference_options = ('sampling_steps', 'sampling_eta', 'sampling_seed', 'guidance_scale')

  @classmethod
  def label(cls, config) -> str:
    m = config.model
    if m.denoiser == 'mapping':
      return "Wan et al.'s mapping T in the LDM pipeline (restored L, zero chroma)"
    parts = [f'DDIM {m.sampling_steps} steps', f'eta {m.sampling_eta:g}',
             f'seed {m.sampling_seed}']
    if m.condition_mask:
      parts.append('mask-conditioned')
    if m.guidance == 'classifier_free':
      parts.append(f'CFG w={m.guidance_scale:g}')
    return f"Latent diffusion in Wan et al.'s space ({', '.join(parts)}; restored L, zero chroma)"

  def __init__(self, config, steps_per_epoch: int = 1):
    super().__init__(config, steps_per_epoch)  # Wan et al.'s discriminators, VGG, checks
    m = config.model
    if m.denoiser not in DENOISERS:
      raise ValueError(f'config.model.denoiser={m.denoiser!r}; use one of {DENOISERS}')
    if m.guidance not in GUIDANCE:
      raise ValueError(f'config.model.guidance={m.guidance!r}; use one of {GUIDANCE}')
    if m.parameterization not in ldm.PARAMETERIZATIONS:
      raise ValueError(f'config.model.parameterization={m.parameterization!r}; use one of '
                       f'{ldm.PARAMETERIZATIONS}')
    self.diffusion = m.denoiser == 'diffusion'
    self.generator = LDMNetworks(wan2020.ml_frozen(m))
    if self.diffusion:
      self.vgg = None  # only the mapping stage's feature matching reads VGG-19
    # The denoiser's Adam: config.optim with config.diffusion_optim's fields on top (diffusion
    # models train with beta1 0.9 and gradient clipping, not the GAN stages' beta1 0.5).
    self.diffusion_config = ml_collections.ConfigDict(
        {'optim': dict(config.optim.to_dict(), **config.get('diffusion_optim', {}))})
    self.diffusion_tx = optim.make_optimizer(self.diffusion_config, steps_per_epoch)
    names = stage_names(m)
    self.scalars = tuple(dict.fromkeys(s for n in names for s in SCALARS[n]))

  # ------------------------------------------------------------------------ stages
  def stages(self) -> tuple[tuple[str, int], ...]:
    steps = self.config.train.stage_steps
    return tuple((name, int(steps[name])) for name in stage_names(self.config.model))

  def scalars_of(self, stage: Optional[str]) -> tuple[str, ...]:
    return SCALARS[stage] if stage else self.scalars

  def loss_terms_of(self, stage: Optional[str]) -> tuple[str, ...]:
    return LOSS_TERMS[stage] if stage else self.loss_terms

  # ------------------------------------------------------------------------- state
  def init_generator(self, key, size: int) -> dict:
    return self.generator.init(key, *base.example_inputs(size), method=LDMNetworks.init_all)

  def init_discriminator(self, key, size: int) -> dict:
    d = super().init_discriminator(key, size)
    if self.diffusion:
      d.pop('d_mapping')  # the diffusion stage has no discriminator
    return d

  def _tx(self, name: str, discriminator: bool) -> optax.GradientTransformation:
    if discriminator:
      return self.d_tx
    return self.diffusion_tx if name == 'denoiser' else self.g_tx

  def init_optimizer(self, params: dict, discriminator: bool) -> dict:
    """One Adam state per network (as Wan et al.), the denoiser's from diffusion_optim."""
    return {name: self._tx(name, discriminator).init(p) for name, p in params.items()}

  def _update(self, state, names: tuple[str, ...], grads: dict,
              discriminator: bool) -> tuple[dict, dict]:
    params = dict(state.d_params if discriminator else state.g_params)
    opt = dict(state.d_opt_state if discriminator else state.g_opt_state)
    for name in names:
      updates, opt[name] = self._tx(name, discriminator).update(grads[name], opt[name],
                                                                params[name])
      params[name] = optax.apply_updates(params[name], updates)
    return params, opt

  # ----------------------------------------------------------------- networks, restore
  def networks(self) -> dict:
    """Per-network forward FLOPs (model_summary). The sampler is a loop, which XLA's cost
    analysis counts once, so the generator's own row is one sampling step's worth; the
    'per image' row runs the denoiser on sampling_steps (x 2 with guidance) copies of the
    latent as one batch: the FLOPs of the whole sampler, without its loop."""
    if not self.diffusion:
      return super().networks()
    m = self.config.model
    f = 2 ** m.vae_downsample
    passes = 2 if m.guidance == 'classifier_free' else 1

    def latent(l, channels, copies=1):
      return jnp.zeros((l.shape[0] * copies, -(-l.shape[1] // f), -(-l.shape[2] // f),
                        channels), l.dtype)

    def step(mod, l, copies=passes):
      c = latent(l, m.vae_features + int(m.condition_mask), copies)
      return mod.predict(latent(l, m.vae_features, copies),
                         jnp.zeros((c.shape[0],), jnp.int32), c)

    def per_image(mod, l):
      c = mod.condition(l)  # (the detector too, with the mask condition)
      copies = m.sampling_steps * passes
      z = mod.predict(latent(l, m.vae_features, copies), jnp.zeros((c.shape[0] * copies,),
                                                                   jnp.int32),
                      jnp.repeat(c, copies, axis=0))
      return mod.vae2.decode(z[:l.shape[0]])

    nets = {}
    if m.condition_mask:
      nets['scratch detector'] = lambda mod, l: mod.detect(l)
    nets.update({
        'VAE1 encoder (condition)': lambda mod, l: mod.vae1.encode(l)[0],
        'denoiser, one sampling step': step,
        'VAE2 decoder': lambda mod, l: mod.vae2.decode(latent(l, m.vae_features)),
        f'per image at {m.sampling_steps} steps': per_image})
    return nets

  def make_restorer(self, variables: dict, **options):
    """The whole pipeline at once (the sampler's settings from config.model); with the mask
    condition (or the mapping ablation) `restorer.mask` (restore --scratch_mask) replaces the
    detector's mask."""
    kept = {k: v for k, v in options.items() if k == 'reference_size' and v}
    return inference.WholeImageRestorer(
        self.generator, variables, False,
        accepts_mask=not self.diffusion or bool(self.config.model.condition_mask),
        max_pixels=self.config.model.get('max_restore_pixels', 2048 * 2048), **kept)

  # ------------------------------------------------------------------------- steps
  def train_step(self, state, batch: dict, frozen: Any, stage: Optional[str] = None):
    """One step of `stage` (default: config.train.stage, else the denoising stage, what
    `benchmark --what=train` times)."""
    names = [n for n, _ in self.stages()]
    stage = stage or self.config.train.get('stage', '') or names[1]
    if stage not in names:
      raise ValueError(f'unknown stage {stage!r}; one of {names}')
    step_rng = jax.random.fold_in(state.rng, state.step)  # as wan2020: its VAE stage, bitwise
    if stage == 'diffusion':
      state, scalars = self._diffusion_step(state, batch, step_rng)
    elif stage == 'vae':
      state, scalars = self._vae_step(state, batch, step_rng)
    elif stage == 'mapping':
      state, scalars = self._mapping_step(state, batch, frozen)
    else:
      state, scalars = self._scratch_step(state, batch)
    # Each network's Adam state (and so its schedule) starts at its stage's first step.
    start = sum(n for _, n in self.stages()[:names.index(stage)])
    scalars['learning_rate'] = optim.learning_rate(
        self.diffusion_config if stage == 'diffusion' else self.config, state.step - start,
        self.steps_per_epoch)
    return state.replace(step=state.step + 1), scalars

  def _diffusion_step(self, state, batch: dict, rng: jax.Array):
    """Eq. 14 of Ho et al. on z_0 = latent_scale E_Y(y) given c = E_{R,X}(x) [+ mask], the VAEs
    frozen; with classifier-free guidance c is zeroed with probability cond_drop_prob per
    example (Ho & Salimans 2022, Algorithm 1)."""
    m = self.config.model
    x, y = batch['input_l'], batch['target_lab'][..., :1]
    p, stats = state.g_params, state.g_batch_stats
    mask = batch.get('defect_mask') if m.condition_mask else None
    z0 = jax.lax.stop_gradient(
        self._apply(p, stats, lambda mod, v: mod.vae2.encode(v)[0], y)) * m.latent_scale
    cond = jax.lax.stop_gradient(
        self._apply(p, stats, lambda mod, v, k: mod.condition(v, k), x, mask))
    noise_key, drop_key, dropout_key = jax.random.split(rng, 3)
    z_t, t, target = ldm_losses.noised_example(z0, noise_key, _alphas(m), m.parameterization)
    if m.guidance == 'classifier_free':
      keep = jax.random.bernoulli(drop_key, 1.0 - m.cond_drop_prob, (x.shape[0],))
      cond = jnp.where(keep[:, None, None, None], cond, 0.0)

    def loss_fn(denoiser):
      q = {**p, 'denoiser': denoiser}
      prediction = self.generator.apply({'params': q, 'batch_stats': stats}, z_t, t, cond, True,
                                        method=LDMNetworks.predict,
                                        rngs={'dropout': dropout_key})
      return ldm_losses.denoising_loss(prediction, target)

    loss, grad = jax.value_and_grad(loss_fn)(p['denoiser'])
    g_params, g_opt = self._update(state, ('denoiser',), {'denoiser': grad}, discriminator=False)
    scalars = {'total': loss, 'denoising_mse': loss, 'g_grad_norm': optax.global_norm(grad)}
    return state.replace(g_params=g_params, g_opt_state=g_opt), scalars


def _alphas(model_config) -> jnp.ndarray:
  """abar_t of the model config's cosine schedule (float32 constants)."""
  return jnp.asarray(ldm.cosine_alphas_cumprod(model_config.timesteps, model_config.cosine_s),
                     jnp.float32)
