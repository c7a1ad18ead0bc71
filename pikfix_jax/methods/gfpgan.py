"""GFP-GAN (Wang et al., CVPR 2021) as a trainable method: the clean GFPGANv1 network
(models/gfpgan.py) trained on aligned face crops against StyleGAN2's discriminator with the
losses of losses/gfpgan.py; configs/baselines/gfpgan.py.

The face the network sees is the RGB of (degraded L, the clean crop's chroma) by default
(colour-preserving restoration, as the release trains it and as `restore --faces=gfpgan` uses
it on coloured photos); with config.model.gray_input, of (degraded L, zero chroma). Its target
is the clean RGB crop. As a generator (input_l, reference_rgb) -> {'rgb', 'restored_l', 'ab'}
the chroma comes from `reference_rgb` (evaluation's data.eval_reference='self' makes it the
clean crop; the face pipeline passes the aligned crop itself), and an input of another size
is resized to out_size and back.

One step, as the release's: the generator's update on D's current logits, then D's on the
same (stop-gradient) output, with lazy R1 every loss.r1_every-th step. With
config.backbones.arcface (a converted arcface_resnet18.pth), the frozen ArcFace adds the
identity loss (eq. 6). With config.data.face_components (a boxes file of
data_prep.face_components) the facial-component losses join in (eq. 5): RoIAlign crops of the
eyes and mouth, three component discriminators (inside d_params under their names, with their
own Adam) trained in the same step. docs/MODEL.md, "GFP-GAN training", lists the choices and
what is left out.
"""

import functools
from typing import Any, Optional

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pikfix_jax import checkpoints
from pikfix_jax import optim
from pikfix_jax import weights
from pikfix_jax.losses import common
from pikfix_jax.losses import gfpgan as gfpgan_losses
from pikfix_jax.methods import base
from pikfix_jax.models import arcface
from pikfix_jax.models import backbones
from pikfix_jax.models import gfpgan
from pikfix_jax.models import layers
from pikfix_jax.ops import color
from pikfix_jax.ops import roi_align

LOSS_TERMS = ('total', 'pixel_l1', 'pyramid_l1', 'perceptual', 'style', 'adversarial', 'd_loss')
SCALARS = LOSS_TERMS + ('r1', 'd_real', 'd_fake', 'psnr', 'ssim', 'g_grad_norm', 'd_grad_norm',
                        'learning_rate')
DECODER = 'stylegan_decoder'  # The subtree model.fix_decoder keeps frozen.
# With data.face_components: the component losses' terms and the discriminators' diagnostics.
COMPONENT_TERMS = tuple(f'comp_gan_{n}' for n in gfpgan.COMPONENTS) + ('comp_style',) + tuple(
    f'd_{n}' for n in gfpgan.COMPONENTS)
COMPONENT_SCALARS = COMPONENT_TERMS + ('comp_valid', 'comp_d_grad_norm')


def crop_components(faces: jnp.ndarray, boxes: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """{component: RoIAlign crops (B, s, s, 3)} of faces (B, S, S, 3) at boxes (B, 3, 4)
  (x0, y0, x1, y1; gfpgan.COMPONENTS order), s the release's 80 / 120 at S = 512, scaled."""
  index = jnp.arange(faces.shape[0])
  return {name: roi_align.roi_align(faces, boxes[:, i], index,
                                    gfpgan.component_size(name, faces.shape[1]))
          for i, name in enumerate(gfpgan.COMPONENTS)}


class FaceRestorationNet(nn.Module):
  """GFPGANv1Clean (submodule 'gfpgan') between Lab inputs and an sRGB face (module
  docstring)."""
  config: Any  # config.model (a FrozenConfigDict: hashable).

  def setup(self):
    m = self.config
    self.gfpgan = gfpgan.GFPGANv1Clean(
        out_size=m.out_size, num_style_feat=m.num_style_feat,
        channel_multiplier=m.channel_multiplier, num_mlp=m.num_mlp, narrow=m.narrow)

  def face_input(self, input_l: jnp.ndarray, ab: jnp.ndarray) -> jnp.ndarray:
    """The network's face in [-1, 1]: sRGB of (L, ab), or of (L, 0) with gray_input."""
    if self.config.gray_input:
      ab = jnp.zeros_like(ab)
    return color.lab_normalized_to_rgb(input_l, ab) * 2.0 - 1.0

  def restore(self, face: jnp.ndarray, train: bool = False
              ) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
    """(restored face in [-1, 1], unclamped; the U-Net's intermediate RGB images when
    training). Noise maps: fresh from rng 'noise' in training, from model.noise_seed else."""
    key = self.make_rng('noise') if train else jax.random.PRNGKey(self.config.noise_seed)
    shapes = gfpgan.noise_shapes(self.config.out_size, face.shape[0])
    noise = [jax.random.normal(k, s, face.dtype)
             for k, s in zip(jax.random.split(key, len(shapes)), shapes)]
    return self.gfpgan(face, noise=noise, return_rgb=train)

  def __call__(self, input_l: jnp.ndarray, reference_rgb: Optional[jnp.ndarray] = None,
               train: bool = False) -> dict:
    size = self.config.out_size
    hw = input_l.shape[1:3]
    l = layers.resize(input_l, size, size)
    if reference_rgb is None:
      ab = jnp.zeros(l.shape[:3] + (2,), l.dtype)
    else:
      ab = color.rgb_to_lab_normalized(layers.resize(reference_rgb, size, size))[1]
    image, _ = self.restore(self.face_input(l, ab), train)
    rgb = layers.resize(jnp.clip((image + 1.0) / 2.0, 0.0, 1.0), *hw)
    restored_l, out_ab = color.rgb_to_lab_normalized(rgb)
    return {'rgb': rgb, 'restored_l': restored_l, 'ab': out_ab}


class Method(base.Method):
  """GFP-GAN (module docstring): config.model and config.loss of configs/baselines/gfpgan.py."""

  uses_reference = True  # the reference's chroma goes in (ignored with model.gray_input)
  loss_terms = LOSS_TERMS
  scalars = SCALARS
  paper_rows = {}  # the paper reports CelebA-Test faces, none of our datasets
  config_modules = ('configs.baselines.gfpgan',)

  @classmethod
  def label(cls, config) -> str:
    if config.model.gray_input:
      return 'GFP-GAN (degraded L in, zero chroma)'
    return "GFP-GAN (degraded L + the clean crop's chroma in)"

  def face_net(self, variables: dict):
    """The generator on the aligned crop's L with the crop itself as its reference (the chroma
    the colour-preserving variant reads; model.gray_input ignores it), at model.out_size."""
    generator = self.generator

    @jax.jit  # the variables an argument, not constants folded into the program
    def forward(v: dict, face: jnp.ndarray) -> jnp.ndarray:
      face = face[None]
      return generator.apply(v, color.rgb_to_lab_normalized(face)[0], face)['rgb'][0]

    return functools.partial(forward, variables), int(self.config.model.out_size)

  def __init__(self, config, steps_per_epoch: int = 1):
    super().__init__(config, steps_per_epoch)
    m, l = config.model, config.loss
    gfpgan.log_size(m.out_size)  # a one-line error for an unsupported size
    self.generator = FaceRestorationNet(ml_collections.FrozenConfigDict(m))
    self.discriminator = gfpgan.StyleGAN2Discriminator(m.out_size, m.d_channel_multiplier,
                                                      m.d_narrow)
    if len(l.perceptual_layers) != len(l.perceptual_layer_weights):
      raise ValueError('config.loss.perceptual_layer_weights needs one weight per '
                       f'perceptual_layers entry ({len(l.perceptual_layers)})')
    self.vgg = backbones.VGG(depth=19, outputs=tuple(l.perceptual_layers))
    # A workdir's config from before the field has no backbones.arcface: no identity loss.
    self.arcface_path = config.backbones.get('arcface', '')
    if self.arcface_path:
      self.loss_terms = LOSS_TERMS + ('identity',)
      self.scalars = SCALARS + ('identity',)
    if l.r1_every < 1:
      raise ValueError(f'config.loss.r1_every={l.r1_every}: must be >= 1')
    batch = config.train.batch_size
    if batch % min(batch, gfpgan.STDDEV_GROUP):
      raise ValueError(f'config.train.batch_size={batch}: the discriminator\'s minibatch stddev '
                       f'needs a multiple of {gfpgan.STDDEV_GROUP} (or fewer images)')
    # StyleGAN2's lazy-regularisation correction of D's Adam (as the release): lr x r,
    # betas ^ r, r = k / (k + 1) for R1 every k steps.
    r = l.r1_every / (l.r1_every + 1)
    o = config.optim
    self.d_optim_config = ml_collections.ConfigDict({'optim': dict(
        o.to_dict(), learning_rate=o.learning_rate * r, b1=o.b1 ** r, b2=o.b2 ** r)})
    self.d_tx = optim.make_optimizer(self.d_optim_config, steps_per_epoch)
    self.components = bool(config.data.face_components)
    if self.components:
      self._init_components(steps_per_epoch)
    else:
      logging.info('GFP-GAN: no config.data.face_components, so no facial-component losses.')

  def _init_components(self, steps_per_epoch: int):
    """The component discriminators, their optimiser (config.component_optim, the schedule of
    config.optim) beside the face discriminator's, and their scalars."""
    c = self.config
    self.component_d = gfpgan.FacialComponentDiscriminator(c.model.component_d_width)
    oc = c.component_optim
    self.component_optim_config = ml_collections.ConfigDict({'optim': dict(
        c.optim.to_dict(), learning_rate=oc.learning_rate, b1=oc.b1, b2=oc.b2)})
    labels = lambda params: {k: jax.tree.map(
        lambda _, k=k: 'component' if k in gfpgan.COMPONENTS else 'face', v)
        for k, v in params.items()}
    self.d_tx = optax.multi_transform(
        {'face': self.d_tx,
         'component': optim.make_optimizer(self.component_optim_config, steps_per_epoch)},
        labels)
    self.loss_terms = LOSS_TERMS + COMPONENT_TERMS
    self.scalars = SCALARS + COMPONENT_SCALARS

  # ---------------------------------------------------------------------------- state
  def init_generator(self, key, size: int) -> dict:
    del size  # the network's size is model.out_size
    variables = self.generator.init(key, *base.example_inputs(self.config.model.out_size))
    return {'params': variables['params']}  # no noise buffers: noise is drawn (restore)

  def init_discriminator(self, key, size: int) -> dict:
    del size
    s = self.config.model.out_size
    params = self.discriminator.init(key, jnp.zeros((1, s, s, 3), jnp.float32))['params']
    if self.components:  # keys of their own, the face discriminator's init unchanged
      keys = jax.random.split(jax.random.fold_in(key, 1), len(gfpgan.COMPONENTS))
      for name, k in zip(gfpgan.COMPONENTS, keys):
        c = gfpgan.component_size(name, s)
        params[name] = self.component_d.init(k, jnp.zeros((1, c, c, 3), jnp.float32))['params']
    return params

  def load_pretrained(self, g_vars: dict) -> dict:
    """The network of model.init_checkpoint (a converted GFP-GAN), when given."""
    path = self.config.model.init_checkpoint
    if not path:
      return g_vars
    _, loaded = weights.load_gfpgan(path)
    expected = g_vars['params']['gfpgan']
    shape = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
    if shape(loaded['params']) != shape(expected):
      raise ValueError(f'config.model.init_checkpoint={path}: its GFP-GAN is not the '
                       'architecture of config.model (out_size, num_style_feat, '
                       'channel_multiplier, narrow)')
    g_vars['params']['gfpgan'] = jax.tree.map(jnp.asarray, loaded['params'])
    return g_vars

  def init_state(self, seed: int) -> base.TrainState:
    if self.config.data.image_size != self.config.model.out_size:
      raise ValueError(f'config.data.image_size={self.config.data.image_size} must be '
                       f'config.model.out_size={self.config.model.out_size} (faces train at '
                       'the network\'s size)')
    return super().init_state(seed)

  def split_frozen(self, params: dict) -> tuple[dict, dict]:
    """(trainable, frozen): the StyleGAN2 decoder frozen with model.fix_decoder."""
    if not self.config.model.fix_decoder:
      return params, {}
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    frozen = {k: v for k, v in flat.items() if DECODER in k}
    trainable = {k: v for k, v in flat.items() if DECODER not in k}
    return (flax.traverse_util.unflatten_dict(trainable),
            flax.traverse_util.unflatten_dict(frozen))

  def networks(self) -> dict:
    """Per-network FLOPs (model_summary): the whole face network, and its discriminator."""
    s = self.config.model.out_size
    return {f'GFP-GAN generator, one {s}x{s} face':
            lambda mod, l: mod.restore(jnp.zeros(l.shape[:1] + (s, s, 3), l.dtype))[0]}

  def init_frozen(self, seed: int) -> dict:
    """{'vgg': the perceptual loss's VGG-19 (base.Method.init_frozen)} and, with
    config.backbones.arcface, {'arcface': its variables}."""
    frozen = {'vgg': super().init_frozen(seed)}
    if not self.arcface_path:
      logging.info('No config.backbones.arcface: GFP-GAN trains without its identity loss '
                   '(docs/WEIGHTS.md, "ArcFace").')
    else:
      shapes = weights.variable_shapes('arcface')
      frozen['arcface'] = weights.maybe_load_backbone(self.arcface_path, 'arcface', shapes)
    return frozen

  # ----------------------------------------------------------------------------- step
  def train_step(self, state: base.TrainState, batch: dict, frozen: Any
                 ) -> tuple[base.TrainState, dict]:
    c = self.config
    rng = jax.random.fold_in(state.rng, state.step)
    target_lab = batch['target_lab']
    target = color.lab_normalized_to_rgb(target_lab[..., :1], target_lab[..., 1:]) * 2.0 - 1.0
    d = self.discriminator
    vgg = lambda x: self.vgg.apply(frozen['vgg'], (x + 1.0) / 2.0)  # the release's range_norm
    identity = 'arcface' in frozen
    face_d_params = {k: v for k, v in state.d_params.items() if k not in gfpgan.COMPONENTS}
    if self.components:
      real_crops = crop_components(target, batch['face_boxes'])
      real_features = {n: jax.lax.stop_gradient(
          self.component_d.apply({'params': state.d_params[n]}, x)[1])
          for n, x in real_crops.items()}

    def forward(g_params):
      variables = {'params': checkpoints.merge_params(g_params, state.g_frozen)}
      face = self.generator.apply(variables, batch['input_l'], target_lab[..., 1:],
                                  method=FaceRestorationNet.face_input)
      return self.generator.apply(variables, face, True, rngs={'noise': rng},
                                  method=FaceRestorationNet.restore)

    (image, out_rgbs), pullback = jax.vjp(forward, state.g_params)
    target_features = jax.lax.stop_gradient(vgg(target))
    if identity:
      target_embedding = jax.lax.stop_gradient(arcface.embed(frozen['arcface'], target))
    until = c.loss.pyramid_until
    pyramid_weight = (c.loss.pyramid_weight if until < 0 else
                      jnp.where(state.step < until, c.loss.pyramid_weight, 0.0))

    def g_loss_fn(outs):
      fake_image, rgbs = outs
      embeddings = ((arcface.embed(frozen['arcface'], fake_image), target_embedding)
                    if identity else None)
      terms = gfpgan_losses.generator_loss(
          fake_image, rgbs, target, d.apply({'params': face_d_params}, fake_image),
          vgg(fake_image), target_features, pyramid_weight, c.loss, embeddings)
      if self.components:
        fake = {n: self.component_d.apply({'params': state.d_params[n]}, x)
                for n, x in crop_components(fake_image, batch['face_boxes']).items()}
        comp = gfpgan_losses.component_generator_loss(fake, real_features,
                                                      batch['face_box_valid'], c.loss)
        terms = dict(terms, **comp, total=terms['total'] + comp['comp_total'])
      return terms['total'], terms

    (_, terms), cotangent = jax.value_and_grad(g_loss_fn, has_aux=True)((image, out_rgbs))
    (g_grads,) = pullback(cotangent)
    g_updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    fake = jax.lax.stop_gradient(image)
    logits = lambda p, x: d.apply({'params': p}, x)

    def d_loss_fn(d_params):
      real_logits, fake_logits = logits(d_params, target), logits(d_params, fake)
      loss = common.discriminator_loss(real_logits, fake_logits, gfpgan_losses.ADVERSARIAL)
      return loss, (real_logits, fake_logits)

    (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(face_d_params)
    every = c.loss.r1_every

    def r1_loss(d_params):
      return gfpgan_losses.r1_penalty(lambda x: logits(d_params, x), target)

    def with_r1(d_params):
      penalty, grads = jax.value_and_grad(r1_loss)(d_params)
      scale = c.loss.r1_weight / 2.0 * every
      return penalty, jax.tree.map(lambda g: g * scale, grads)

    def without_r1(d_params):
      return jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, d_params)

    r1, r1_grads = jax.lax.cond((state.step + 1) % every == 0, with_r1, without_r1,
                                face_d_params)
    d_grads = jax.tree.map(jnp.add, d_grads, r1_grads)
    face_d_grads = d_grads
    component_scalars = {}
    if self.components:
      component_grads, component_scalars = self.component_d_grads(
          state.d_params, real_crops, crop_components(fake, batch['face_boxes']),
          batch['face_box_valid'])
      d_grads = dict(d_grads, **component_grads)
    d_updates, d_opt_state = self.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    rgb = jnp.clip((image + 1.0) / 2.0, 0.0, 1.0)
    scalars = dict(terms, d_loss=d_loss, r1=r1,
                   d_real=jnp.mean(jax.nn.sigmoid(real_logits)),
                   d_fake=jnp.mean(jax.nn.sigmoid(fake_logits)),
                   g_grad_norm=optax.global_norm(g_grads),
                   d_grad_norm=optax.global_norm(face_d_grads),
                   learning_rate=optim.learning_rate(c, state.step, self.steps_per_epoch),
                   **base.image_scalars(rgb, target_lab), **component_scalars)
    scalars.pop('comp_total', None)
    return state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                         g_opt_state=g_opt_state, d_opt_state=d_opt_state), scalars

  def component_d_grads(self, d_params: dict, real_crops: dict, fake_crops: dict,
                        valid: jnp.ndarray) -> tuple[dict, dict]:
    """Gradients of the three component discriminators' losses (real crops -> 1, the restored
    crops (stop-gradient) -> 0, over the faces with boxes) and their scalars."""
    grads, scalars = {}, {}
    for i, name in enumerate(gfpgan.COMPONENTS):
      def loss_fn(params, name=name, i=i):
        real = self.component_d.apply({'params': params}, real_crops[name])[0]
        fake = self.component_d.apply({'params': params},
                                      jax.lax.stop_gradient(fake_crops[name]))[0]
        return gfpgan_losses.component_discriminator_loss(real, fake, valid[:, i])
      scalars[f'd_{name}'], grads[name] = jax.value_and_grad(loss_fn)(d_params[name])
    scalars['comp_valid'] = jnp.mean(valid)
    scalars['comp_d_grad_norm'] = optax.global_norm(grads)
    return grads, scalars
