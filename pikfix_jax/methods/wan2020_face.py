"""Wan et al. 2020's face enhancement network (TPAMI sec. 3.4) as a method: the progressive SPADE
generator G_f (models/wan_face.py, its training form with spectral norm) against the multi-scale
discriminator D_f, on aligned face crops with the project's degradations; eqs. 17-18 plus the
release's D feature matching (losses/wan_face.py).

The face G_f sees: the RGB of (degraded L, the clean face's chroma) by default, i.e. it restores
the face of an already-coloured photo, as the face pipeline (pikfix_jax/faces.py) applies it;
with model.gray_input, the RGB of (degraded L, zero chroma). With model.behind_wan = a wan2020
(or wan_ldm) training workdir, the degraded L first goes through that frozen pipeline (its
restored L; sec. 3.4's "jointly trained ... r_f is the output of triplet domain translation
network"), whose variables become frozen generator params. Target: the clean RGB face.

The generator's interface (input_l, reference_rgb) -> {'rgb', 'restored_l', 'ab'} reads the
chroma from the reference (evaluation: data.eval_reference = 'self', the clean face); G_f runs
at data.image_size (the release's load_size), other sizes resized to it and back.
docs/MODEL.md, "Wan et al.: training the face network", lists every choice.
"""

import os
import functools
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pikfix_jax import artifacts
from pikfix_jax import loading
from pikfix_jax import methods
from pikfix_jax import optim
from pikfix_jax.losses import wan as wan_losses
from pikfix_jax.losses import wan_face as face_losses
from pikfix_jax.methods import base
from pikfix_jax.models import backbones
from pikfix_jax.models import layers
from pikfix_jax.models import wan_face
from pikfix_jax.ops import color

TRANSLATION = 'translation'  # the frozen Wan et al. pipeline's variables (model.behind_wan)
SCALARS = ('total', 'perceptual', 'gan', 'feature_matching', 'd_loss', 'psnr', 'ssim',
           'g_grad_norm', 'd_grad_norm', 'learning_rate')


class FaceNetworks(nn.Module):
  """G_f (training form: spectral norm) behind an optional frozen restoration network;
  called, (input_l, reference_rgb, train) -> {'rgb', 'restored_l', 'ab'} (module docstring)."""
  load_size: int = 256
  ngf: int = 64
  num_upsampling_layers: str = 'normal'
  spade_hidden: int = wan_face.SPADE_HIDDEN
  gray_input: bool = False
  translation: Optional[nn.Module] = None  # L -> {'restored_l', ...}, e.g. WanNetworks

  def setup(self):
    self.face = wan_face.FaceGenerator(self.load_size, self.ngf, self.num_upsampling_layers,
                                       self.spade_hidden, spectral_norm=True)

  def face_input(self, input_l: jnp.ndarray, ab: Optional[jnp.ndarray]) -> jnp.ndarray:
    """r_f: the RGB of (L, ab), L the input or its frozen restoration, ab zero with
    gray_input (or None). No gradient flows into the restoration (docs/MODEL.md)."""
    l = input_l
    if self.translation is not None:
      l = jax.lax.stop_gradient(self.translation(input_l)['restored_l'])
    if self.gray_input or ab is None:
      return color.gray_to_rgb(l)
    return color.lab_normalized_to_rgb(l, ab)

  def enhance(self, face: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """G_f on RGB faces (B, H, W, 3) in [0, 1]: resized to load_size and back when H, W differ."""
    h, w = face.shape[1:3]
    s = self.load_size
    out = self.face(layers.resize(face, s, s), train)
    return layers.resize(out, h, w)

  def __call__(self, input_l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None,
               train: bool = False) -> dict:
    ab = None
    if reference_rgb is not None and not self.gray_input:
      reference = layers.resize(reference_rgb.astype(jnp.float32), *input_l.shape[1:3])
      ab = color.rgb_to_lab_normalized(reference)[1]
    rgb = self.enhance(self.face_input(input_l, ab), train)
    l, ab = color.rgb_to_lab_normalized(rgb)
    return {'rgb': rgb, 'restored_l': l, 'ab': ab}


def translation_method(workdir: str) -> base.Method:
  """The method of the training workdir config.model.behind_wan names (its config.json), which
  must restore L without a reference (wan2020, wan_ldm); a one-line error otherwise."""
  path = os.path.join(workdir, artifacts.CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f'config.model.behind_wan={workdir}: no {artifacts.CONFIG_FILE} there; give '
                     'a wan2020 (or wan_ldm) training workdir')
  wan_config = artifacts.read_config(path)
  if methods.method_class(wan_config).uses_reference:
    raise ValueError(f'config.model.behind_wan={workdir} trains {methods.name_of(wan_config)!r}, '
                     'which needs a reference; give a wan2020 (or wan_ldm) training workdir')
  return methods.get(wan_config)


def face_network(config: ml_collections.ConfigDict, variables: dict
                 ) -> tuple[wan_face.FaceGenerator, dict]:
  """G_f of a trained workdir (its config and generator variables) in its inference form: the
  plain FaceGenerator with every spectral norm folded into its kernel (`fold_spectral_norm`),
  BatchNorm with its running statistics. Input: the aligned face as this config's G_f sees it
  (`config.model.gray_input`: grey)."""
  m = config.model
  module = wan_face.FaceGenerator(config.data.image_size, m.ngf, m.num_upsampling_layers,
                                  m.spade_hidden)
  face = {c: variables[c]['face'] for c in ('params', 'batch_stats')}
  return module, wan_face.fold_spectral_norm(face)


def _pick(loaded: dict, wanted: dict, source: str) -> dict:
  """`loaded`'s values at `wanted`'s paths (the networks the inference path touches), checked."""
  have = flax.traverse_util.flatten_dict(loaded)
  out = {}
  for path, like in flax.traverse_util.flatten_dict(wanted).items():
    if path not in have or tuple(have[path].shape) != tuple(like.shape):
      raise ValueError(f'{source}: variable {"/".join(path)} missing or of another shape than '
                       'its config.json builds')
    out[path] = jnp.asarray(have[path])
  return flax.traverse_util.unflatten_dict(out)


class Method(base.Method):
  """Wan et al.'s face network (module docstring): config.model, config.loss and config.optim.ttur
  of configs/baselines/wan2020_face.py."""

  uses_reference = True  # the chroma (the instance says False with model.gray_input)
  paper_rows = {}  # the paper reports no PSNR/SSIM/LPIPS of the face network alone
  config_modules = ('configs.baselines.wan2020_face',)
  scalars = SCALARS
  loss_terms = ('total', 'd_loss')

  @classmethod
  def label(cls, config) -> str:
    m = config.model
    source = 'grey input' if m.gray_input else 'degraded L + clean chroma in'
    behind = ", behind Wan et al.'s translation" if m.behind_wan else ''
    return f"Wan et al. 2020 face network ({source}{behind})"

  def __init__(self, config, steps_per_epoch: int = 1):
    super().__init__(config, steps_per_epoch)
    m = config.model
    self.uses_reference = not m.gray_input
    self.translation = translation_method(m.behind_wan) if m.behind_wan else None
    self.generator = FaceNetworks(config.data.image_size, m.ngf, m.num_upsampling_layers,
                                  m.spade_hidden, bool(m.gray_input),
                                  self.translation.generator if self.translation else None)
    self.discriminator = wan_face.FaceDiscriminator(m.d_scales, m.d_features, m.d_layers)
    self.vgg = backbones.VGG(depth=19, outputs=wan_losses.VGG_LAYERS)
    o = config.optim
    if o.get('ttur', False):  # SPADE's TTUR: G at lr / 2, D at 2 lr
      rate = lambda factor: ml_collections.ConfigDict(
          {'optim': dict(o.to_dict(), learning_rate=o.learning_rate * factor)})
      self.g_config, d_config = rate(0.5), rate(2.0)
      self.g_tx = optim.make_optimizer(self.g_config, steps_per_epoch)
      self.d_tx = optim.make_optimizer(d_config, steps_per_epoch)
    else:
      self.g_config = config

  # ------------------------------------------------------------------------ state
  def init_discriminator(self, key, size: int) -> dict:
    """D_f's params and its spectral norms' u, v ({'params', 'batch_stats'})."""
    return flax.core.unfreeze(self.discriminator.init(
        key, jnp.zeros((1, size, size, 3), jnp.float32)))

  def abstract_discriminator(self, image_size: int = 64) -> dict:
    """Shapes of D_f's params (its u, v are statistics, not parameters)."""
    return super().abstract_discriminator(image_size)['params']

  def init_optimizer(self, params: dict, discriminator: bool) -> Any:
    if discriminator:
      return self.d_tx.init(params['params'])
    return self.g_tx.init(params)

  def load_pretrained(self, g_vars: dict) -> dict:
    """model.behind_wan: the restoration network's trained variables (its workdir's latest
    checkpoint), those its inference path reads."""
    if self.translation is None:
      return g_vars
    workdir = self.config.model.behind_wan
    _, loaded, _ = loading.load_generator(workdir=workdir)
    for c in ('params', 'batch_stats'):
      if TRANSLATION in g_vars.get(c, {}):
        g_vars[c][TRANSLATION] = _pick(loaded.get(c, {}), g_vars[c][TRANSLATION],
                                       f'config.model.behind_wan={workdir}')
    return g_vars

  def split_frozen(self, params: dict) -> tuple[dict, dict]:
    """The restoration network behind G_f is frozen."""
    trainable = {k: v for k, v in params.items() if k != TRANSLATION}
    return trainable, {k: v for k, v in params.items() if k == TRANSLATION}

  # ---------------------------------------------------------------- networks, restore
  def networks(self) -> dict:
    nets = {}
    if self.translation is not None:
      nets["Wan et al.'s pipeline (frozen)"] = lambda m, l: m.translation(l)['restored_l']
    nets['face generator G_f'] = lambda m, l: m.enhance(color.gray_to_rgb(l))
    return nets

  def face_net(self, variables: dict):
    """G_f alone in its inference form (`face_network`), the crop grey with model.gray_input
    as in training; behind Wan et al.'s translation too (the photo it gets is restored)."""
    model, folded = face_network(self.config, variables)
    gray = bool(self.config.model.gray_input)

    @jax.jit  # the variables an argument, not constants folded into the program
    def forward(v: dict, face: jnp.ndarray) -> jnp.ndarray:
      if gray:
        face = color.gray_to_rgb(color.rgb_to_lab_normalized(face)[0])
      return model.apply(v, face[None])[0]

    return functools.partial(forward, folded), model.load_size

  # ------------------------------------------------------------------------ step
  def train_step(self, state: base.TrainState, batch: dict, frozen: Any
                 ) -> tuple[base.TrainState, dict]:
    """D_f's LSGAN step on the current G_f output, then G_f's step against the updated D_f
    (eqs. 17-18 + feature matching); one power iteration of every spectral norm of each."""
    c = self.config.loss
    target = batch['target_lab']
    target_rgb = color.lab_normalized_to_rgb(target[..., :1], target[..., 1:])
    params = {**state.g_params, **state.g_frozen}
    face_in = self.generator.apply({'params': params, 'batch_stats': state.g_batch_stats},
                                   batch['input_l'], target[..., 1:],
                                   method=FaceNetworks.face_input)

    def forward(g_params):
      out, updates = self.generator.apply(
          {'params': {**g_params, **state.g_frozen}, 'batch_stats': state.g_batch_stats},
          face_in, True, method=FaceNetworks.enhance, mutable=['batch_stats'])
      return out, updates['batch_stats']

    fake, pullback, g_batch_stats = jax.vjp(forward, state.g_params, has_aux=True)
    d = self.discriminator
    n = len(fake)
    halves = lambda outputs: ([jax.tree.map(lambda x: x[:n], o) for o in outputs],
                              [jax.tree.map(lambda x: x[n:], o) for o in outputs])

    def d_loss_fn(dp):
      # fake and real in one batch, as the release (one power iteration per D_f pass)
      outputs, updates = d.apply(
          {'params': dp, 'batch_stats': state.d_params['batch_stats']},
          jnp.concatenate([jax.lax.stop_gradient(fake), target_rgb]), train=True,
          mutable=['batch_stats'])
      fake_out, real_out = halves(outputs)
      return face_losses.lsgan_discriminator_loss(real_out, fake_out), updates['batch_stats']

    (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.d_params['params'])
    updates, d_opt = self.d_tx.update(d_grads, state.d_opt_state, state.d_params['params'])
    d_variables = {'params': optax.apply_updates(state.d_params['params'], updates),
                   'batch_stats': d_stats}
    vgg = lambda v: self.vgg.apply(frozen, v)

    def g_loss_fn(out):
      fake_out, real_out = halves(d.apply(d_variables, jnp.concatenate([out, target_rgb])))
      terms = {'gan': face_losses.lsgan_generator_loss(fake_out),
               'feature_matching': face_losses.feature_matching_loss(fake_out, real_out),
               'perceptual': face_losses.perceptual_loss(vgg, out, target_rgb)}
      total = (terms['gan'] + c.feature_matching_weight * terms['feature_matching'] +
               c.perceptual_weight * terms['perceptual'])
      return total, dict(terms, total=total)

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = pullback(cotangent)
    updates, g_opt = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    scalars = dict(terms, d_loss=d_loss, g_grad_norm=optax.global_norm(g_grads),
                   d_grad_norm=optax.global_norm(d_grads),
                   learning_rate=optim.learning_rate(self.g_config, state.step,
                                                     self.steps_per_epoch),
                   **base.image_scalars(fake, target))
    return state.replace(step=state.step + 1,
                         g_params=optax.apply_updates(state.g_params, updates),
                         g_opt_state=g_opt, g_batch_stats=g_batch_stats, d_params=d_variables,
                         d_opt_state=d_opt), scalars
