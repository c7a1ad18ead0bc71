"""Pik-Fix's mechanism: the reference's colours reach the output (docs/MODEL.md, "Why the
reference steers").

The tiny model trained briefly with the demo's data settings (configs/demo.py: colours turned
with their reference, nearby reference crops) must follow its reference: with the reference
hue-rotated by 0, 90, 180 and 270 degrees and the input unchanged, the hue of the output's mean
chroma follows the reference's within scoring.HUE_TOLERANCE for every validation input. A model
with a colour prior of its own (the old demo's red) fails this.
"""

import jax
import pytest

from configs import demo
from configs import tiny
from pikfix_jax import scoring
from pikfix_jax import train
from pikfix_jax.data import input_pipeline

# The tiny model follows its reference from ~900 steps (one run: max error 30° at 900, 20° at
# 1200, 11° at 1500; the full suite's run gave 48° at 900: runs of the same code differ; with
# the step compiled at LLVM level 3, 24° at 1200 and 16° at 1500).
STEPS = 1500
OPTIMIZED = {'xla_backend_optimization_level': 3}


def mechanism_config():
  c = tiny.tiny_model(demo.get_config())
  c.data.image_size = 64
  c.data.eval_image_size = 64
  return c


@pytest.mark.slow
def test_output_hue_follows_the_reference():
  config = mechanism_config()
  trainer = train.Trainer(config, train.steps_per_epoch(config))
  state = trainer.init_state(config.seed)
  vgg = trainer.init_frozen(config.seed)
  batches = input_pipeline.train_batches(config, start_step=0,
                                         steps_per_epoch=trainer.steps_per_epoch,
                                         batch_size=config.train.batch_size)
  batch = trainer.shard(next(batches))
  # LLVM's optimisation on for this one long-running step (the suite's flags leave it out to
  # compile tiny programs faster): half the time per step.
  step = trainer.train_step.lower(state, batch, vgg).compile(
      compiler_options=OPTIMIZED if jax.default_backend() == 'cpu' else None)
  for _ in range(STEPS):
    state, _ = step(state, batch, vgg)
    batch = trainer.shard(next(batches))
  batches.close()
  scorer = scoring.Scorer(rows=(scoring.MODEL,), control_angles=scoring.CONTROL_ANGLES)
  _, _, records = trainer.evaluate(
      state, input_pipeline.eval_dataset(config, batch_size=2).as_numpy_iterator(), scorer)
  assert len(records) == 8  # chelsea and coffee, each at 4 hue rotations
  errors = {(r['id'], angle): round(e) for r in records for angle, e in r['hue_error'].items()}
  print(f'hue errors after {STEPS} steps: {errors}')
  assert max(errors.values()) <= scoring.HUE_TOLERANCE, errors
