"""Pik-Fix on DIV2K (paper Table 1, left): 800 train / 100 validation, colorization only.

Needs the tfds `div2k` dataset prepared (see docs/DATA.md) and, for faithful results,
ImageNet ResNet-34 / VGG-19 weights (docs/WEIGHTS.md):
  python -m pikfix_jax.main --config=configs/div2k.py --workdir=runs/div2k \
    --config.backbones.resnet34=weights/resnet34.msgpack --config.backbones.vgg19=weights/vgg19.msgpack
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'div2k'
  c.data.degrade = False  # DIV2K experiments: no degradation (paper sec. 4.1).
  c.train.num_epochs = 20
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c
