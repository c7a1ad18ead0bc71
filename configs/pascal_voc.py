"""Pik-Fix on Pascal VOC with synthetic old-photo degradation (Table 1 middle, Table 6).

A seeded 10,000 train / 1,000 test subset of tfds `voc/2012` (docs/DATA.md); degradations on.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'voc'
  c.data.degrade = True
  c.train.num_epochs = 20
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  return c
