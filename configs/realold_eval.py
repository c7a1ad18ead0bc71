"""Evaluate on RealOld (200 real old photos with expert restorations; test only).

The photos come from the authors; place them as described in docs/DATA.md and point
`data.manual_dir` at them. Train on Pascal VOC first (configs/pascal_voc.py), then:
  python -m pikfix_jax.evaluate --config=configs/realold_eval.py --workdir=runs/voc \
    --config.data.manual_dir=/path/to/RealOld
"""

from configs import pascal_voc


def get_config():
  c = pascal_voc.get_config()
  c.dataset = 'realold'
  c.data.degrade = False  # The inputs are really old: no synthetic degradation.
  c.data.eval_image_size = 256
  c.train.eval_batch_size = 8
  return c
