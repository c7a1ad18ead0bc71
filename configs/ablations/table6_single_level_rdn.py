r"""Table 6, row 1: single-level RDN (the original RDN of Zhang et al.) as the restoration
sub-net, on Pascal VOC with synthetic degradation.

Paper (WACV 2023) Table 6 (Pascal VOC w/ degradation): PSNR 21.89, SSIM 0.818, LPIPS 0.190.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table6_single_level_rdn.py \
      --workdir=runs/table6_single_level_rdn
  python -m pikfix_jax.evaluate --config=configs/ablations/table6_single_level_rdn.py \
      --workdir=runs/table6_single_level_rdn
"""

from configs import pascal_voc


def get_config():
  c = pascal_voc.get_config()
  c.model.restoration.levels = (1,)
  return c
