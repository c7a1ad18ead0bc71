"""Trains the restoration sub-net alone and scores it on grey photos no config trains on.

  python -m pikfix_jax.restoration_probe --config=configs/demo.py [--steps=1000] \
      [--config.data.degradation.clean_prob=0.6 ...]

What a degradation setting (`config.data.degradation`) and a clean-input share cost and buy,
before a full training run: the restoration sub-net of `config.model.restoration` (sec. 3.1)
is trained with the luminance L1 term of the objective only, on the config's batches (its
crops, degradations and clean share), with Adam at `config.optim`'s learning rate and betas.
It is scored on PROBE_PHOTOS, grey scikit-image photos outside every split of the bundled
datasets (four native 128 px crops each, each degraded once with a fixed seed), so settings are
chosen without looking at a reported split (docs/MODEL.md, "Restoration in the demo").
Prints one JSON line: the degraded and restored L (PSNR, SSIM in `config.metrics.convention`)
and the restored L of the clean crops.
"""

import json
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import ml_collections
import numpy as np
import optax
import skimage.data
import tensorflow as tf

from pikfix_jax import cli
from pikfix_jax import metrics
from pikfix_jax import scoring
from pikfix_jax.data import color_tf
from pikfix_jax.data import input_pipeline
from pikfix_jax.models import pikfix
from pikfix_jax.models import restoration_net

PROBE_PHOTOS = ('moon', 'coins', 'grass', 'gravel', 'brick', 'clock')
CROP = 128
_SEED = 12345  # The probe crops' degradations: one fixed draw for every setting compared.


def probe_crops(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """(degraded L, clean L), each (N, CROP, CROP, 1) normalised: four corner/centre crops of
  every PROBE_PHOTOS photo, degraded by `config.data.degradation` with fixed seeds."""
  bank = input_pipeline.texture_bank(config)
  degraded, clean = [], []
  for name in PROBE_PHOTOS:
    gray = getattr(skimage.data, name)().astype(np.float32) / 255.0
    h, w = gray.shape
    corners = ((0, 0), (0, w - CROP), (h - CROP, 0), ((h - CROP) // 2, (w - CROP) // 2))
    for y0, x0 in corners:
      l = color_tf.gray_to_luminance(tf.constant(gray[y0:y0 + CROP, x0:x0 + CROP, None]))
      seed = tf.constant([_SEED, len(clean)], tf.int64)
      degraded.append(input_pipeline.degrade_luminance(l, seed, config, bank).numpy())
      clean.append(l.numpy())
  return np.stack(degraded), np.stack(clean)


def run(config: ml_collections.ConfigDict, steps: int) -> dict:
  """Trains the sub-net `steps` steps on the config's batches and scores it (module doc)."""
  net = restoration_net.from_config(config.model.restoration, remat=config.model.remat,
                                    dtype=pikfix.dtype_from_name(config.model.dtype))
  size, batch_size = config.data.image_size, config.train.batch_size
  params = net.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, size, size, 1)))
  tx = optax.adam(config.optim.learning_rate, b1=config.optim.b1, b2=config.optim.b2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, input_l, target_l):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(jnp.abs(net.apply(p, input_l) - target_l)))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  batches = input_pipeline.train_batches(
      config, start_step=0, batch_size=batch_size,
      steps_per_epoch=input_pipeline.train_steps_per_epoch(config, batch_size=batch_size))
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(batches)
    params, opt_state, loss = step(params, opt_state, batch['input_l'],
                                   batch['target_lab'][..., :1])
  seconds = time.perf_counter() - start

  degraded, clean = probe_crops(config)
  apply = jax.jit(net.apply)
  restored = np.asarray(apply(params, degraded))
  kept = np.asarray(apply(params, clean))
  convention = config.metrics.convention
  target = scoring.luminance8(clean)

  def score(l):
    l8 = scoring.luminance8(l)
    return (metrics.mean(metrics.psnr(target, l8)),
            metrics.mean(metrics.ssim_by_convention(target, l8, convention)))

  (dp, ds), (rp, rs) = score(degraded), score(restored)
  return {'steps': steps, 'train_seconds': round(seconds, 1), 'final_loss': float(loss),
          'crops': len(clean), 'ssim_convention': convention,
          'degraded_l_psnr': dp, 'degraded_l_ssim': ds,
          'restored_l_psnr': rp, 'restored_l_ssim': rs,
          'gain_psnr': rp - dp, 'gain_ssim': rs - ds,
          'clean_restored_l_psnr': metrics.mean(metrics.psnr(target, scoring.luminance8(kept)))}


_FLAGS: dict = {}


def define_flags() -> None:
  """Defines the flags when run as a program (an absl flag can be defined once per process)."""
  _FLAGS['config'] = config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Config file.')
  _FLAGS['steps'] = flags.DEFINE_integer('steps', 1000, 'Training steps of the sub-net.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup()
  config = _FLAGS['config'].value
  if not config.data.degrade:
    print('error: config.data.degrade is off: there is nothing to restore', file=sys.stderr)
    sys.exit(2)
  print(json.dumps(run(config, _FLAGS['steps'].value)), flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
